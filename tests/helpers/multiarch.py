"""The parity corpus's multi-platform base: ``pub-parity/busybox-multi``, an OCI index of linux/amd64 + linux/arm64.

BuildKit's ``platform-qemu`` case was built on an index of the amd64 busybox base and an arm64 twin made
the same way from Debian's arm64 ``busybox-static`` (1:1.35.0-4+deb12u1+b1). Both images here come from
the two ``.deb`` files that ``scripts/setup-emulation.sh`` downloads into ``$LAMINA_TEST_DEBS``
(default ``/var/cache/lamina/debs``): /bin/busybox is read out of each package (ar archive, then its
``data.tar.*``) and checked against the corpus's sha256, and the layer holds the corpus base's entries
(tests/data/parity/base-busybox.json: applet symlinks, /etc/passwd and /etc/group, /tmp 1777, /root
0700) in the corpus's order, ustar, as ``tests/helpers/parity_base.py`` writes the amd64 one. The index
is pushed with skopeo (an independent client) to a registry on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from lamina.oci import mediatypes as mt

from .images import DEFAULT_PATH, Blob, Image, Layer, PushedIndex, _finish_layer, image_manifest, push_layout
from .images import write_layout as write_image_layout
from .parity_base import BASE_CREATED, TEXT_FILES, recorded_base_tar

__all__ = ["ARCHITECTURES", "DEB_DIR", "busybox_from_deb", "busybox_multi_index", "push_busybox_multi"]

DEB_DIR = Path(os.environ.get("LAMINA_TEST_DEBS", "/var/cache/lamina/debs"))
BUSYBOX_VERSION = "1:1.35.0-4+deb12u1+b1"
# architecture -> sha256 of its /bin/busybox as the corpus recorded it (expected/linux_*/layers.json)
ARCHITECTURES = {
    "amd64": "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6",
    "arm64": "61781806ad3650b0b9d2b3fc6971e2bffdca967af1a95375abd0578bafff14fb",
}
HISTORY = {"amd64": "mkbase.py: busybox-static rootfs", "arm64": "mkbase.py: busybox-static rootfs (arm64)"}


def _ar_members(data: bytes) -> dict[str, bytes]:
    """The members of a Debian package (a common ``ar`` archive: ``!<arch>\\n``, 60-byte headers)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (a .deb starts with '!<arch>')")
    members: dict[str, bytes] = {}
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def busybox_from_deb(architecture: str, deb_dir: Path = DEB_DIR) -> bytes:
    """/bin/busybox of ``busybox-static_<architecture>.deb``, checked against the corpus's sha256."""
    deb = deb_dir / f"busybox-static_{architecture}.deb"
    if not deb.is_file():
        raise FileNotFoundError(
            f"{deb} not found: run scripts/install-system-deps.sh (it downloads busybox-static {BUSYBOX_VERSION} "
            "for amd64 and arm64 there; LAMINA_TEST_DEBS names another directory)"
        )
    members = _ar_members(deb.read_bytes())
    data_name = next((name for name in members if name.startswith("data.tar")), None)
    if data_name is None:
        raise ValueError(f"{deb}: no data.tar member")
    with tarfile.open(fileobj=io.BytesIO(members[data_name])) as tar:
        member = tar.extractfile("./bin/busybox")
        if member is None:
            raise ValueError(f"{deb}: no ./bin/busybox")
        binary = member.read()
    if hashlib.sha256(binary).hexdigest() != ARCHITECTURES[architecture]:
        raise ValueError(f"{deb}: /bin/busybox is not busybox-static {BUSYBOX_VERSION} (sha256 differs)")
    return binary


def busybox_layer(binary: bytes) -> Layer:
    """The corpus base's entries in order (ustar, uid/gid 0, no owner names) with ``binary`` as /bin/busybox."""
    tar = recorded_base_tar(lambda name, _sha: binary if name == "bin/busybox" else TEXT_FILES[name])
    return _finish_layer(tar, mt.OCI_LAYER_GZIP)


def _config(layer: Layer, architecture: str) -> Blob:
    doc = {
        "architecture": architecture,
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "created": BASE_CREATED,
        "history": [{"created": BASE_CREATED, "created_by": HISTORY[architecture]}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    return Blob(mt.OCI_CONFIG, json.dumps(doc).encode())


def busybox_multi_index(deb_dir: Path = DEB_DIR) -> tuple[Blob, dict[str, Image]]:
    """The index (amd64 first, entries with platform {architecture, os}) and its two images."""
    images: dict[str, Image] = {}
    manifests = []
    for architecture in ARCHITECTURES:
        layer = busybox_layer(busybox_from_deb(architecture, deb_dir))
        image = image_manifest([layer], config=_config(layer, architecture))
        images[f"linux/{architecture}"] = image
        manifests.append(image.manifest.descriptor(platform={"architecture": architecture, "os": "linux"}))
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    return Blob(mt.OCI_INDEX, json.dumps(doc, indent=2).encode()), images


def push_busybox_multi(host: str, repository: str = "pub-parity/busybox-multi", tag: str = "latest") -> PushedIndex:
    """Push the multi-platform base to ``host`` (127.0.0.1:PORT) with ``skopeo copy --all``."""
    index, images = busybox_multi_index()
    blobs = [blob for image in images.values() for blob in image.blobs()]
    reference = f"{host}/{repository}:{tag}"
    with tempfile.TemporaryDirectory(prefix="lamina-busybox-multi-") as tmp:
        layout = write_image_layout(Path(tmp) / "layout", index, blobs, tag)
        push_layout(layout, reference, "--all", tag=tag)
    return PushedIndex(reference, index.digest, index, images)

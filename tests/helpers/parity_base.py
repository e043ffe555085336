"""The parity corpus's base image, rebuilt entry for entry: ``base/busybox:latest``.

BuildKit built every case of tests/data/parity/ on a busybox-static image (one gzip layer written by
``mkbase.py``: /bin/busybox with its applet symlinks, /tmp 1777, /root 0700, /etc/passwd and /etc/group;
config Env PATH and Cmd ``sh``). ``tests/data/parity/base-busybox.json`` lists that layer's tar entries
in order. This module writes a ustar layer holding exactly those entries — content from Debian's
``busybox-static`` (/bin/busybox, checked against the recorded sha256) and the two recorded text files —
so the first layer of every build compares identical to the reference's, and pushes the image with
skopeo (an independent client). Other base images (the multi-platform twin) register a maker in
``BASE_MAKERS`` under their repository name.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from lamina.oci import mediatypes as mt

from .images import (
    BUSYBOX_BINARY,
    DEFAULT_PATH,
    Blob,
    Image,
    Layer,
    _finish_layer,
    image_manifest,
    push_layout,
    write_layout,
)

__all__ = [
    "BASE_ENTRIES_FILE",
    "BASE_MAKERS",
    "BaseMaker",
    "busybox_base_image",
    "busybox_base_layer",
    "push_busybox_base",
]

BASE_ENTRIES_FILE = Path(__file__).resolve().parents[1] / "data" / "parity" / "base-busybox.json"
BASE_CREATED = "2026-01-01T00:00:00Z"
TEXT_FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
}
TAR_TYPES = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}

BaseMaker = Callable[[str], str]  # registry host (127.0.0.1:PORT) -> pushes HOST/REPO:latest, returns it


def _busybox(want_sha256: str) -> bytes:
    """The host's /bin/busybox when it is the corpus's build, else the amd64 package of that version that
    scripts/setup-emulation.sh downloads (tests/helpers/multiarch.py reads it out of the .deb)."""
    if BUSYBOX_BINARY.exists():
        data = BUSYBOX_BINARY.read_bytes()
        if hashlib.sha256(data).hexdigest() == want_sha256:
            return data
    from .multiarch import busybox_from_deb  # it imports this module: loaded when first needed

    return busybox_from_deb("amd64")


def _content(name: str, want_sha256: str) -> bytes:
    if name == "bin/busybox":
        data = _busybox(want_sha256)
    elif name in TEXT_FILES:
        data = TEXT_FILES[name]
    else:
        raise ValueError(f"{BASE_ENTRIES_FILE}: no content known for base file {name!r}")
    if hashlib.sha256(data).hexdigest() != want_sha256:
        raise ValueError(
            f"base file {name} differs from the corpus's (sha256 {want_sha256[:12]}...): the parity corpus was"
            " built with Debian 12's busybox-static 1:1.35.0-4+deb12u1+b1; install that version"
        )
    return data


def recorded_base_tar(content: Callable[[str, str], bytes]) -> bytes:
    """The base layer's tar: the recorded entries in the recorded order, POSIX ustar headers, uid/gid 0,
    no uname/gname, a fixed mtime (the corpus ignores mtimes), the tar padded as Python's tarfile pads;
    ``content(name, sha256)`` gives each regular file's bytes."""
    recorded = json.loads(BASE_ENTRIES_FILE.read_text())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for entry in recorded["entries"]:
            info = tarfile.TarInfo(entry["name"].rstrip("/"))
            info.type = TAR_TYPES[entry["type"]]
            info.mode = int(entry["mode"], 8)
            info.uid, info.gid = entry["uid"], entry["gid"]
            info.uname = info.gname = ""
            info.mtime = 1_700_000_000
            if entry["type"] == "symlink":
                info.linkname = entry["linkname"]
            if entry["type"] == "file":
                data = content(entry["name"], entry["sha256"])
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def busybox_base_layer() -> Layer:
    """The corpus's base layer, byte for byte the size BuildKit's corpus recorded."""
    raw = recorded_base_tar(_content)
    expected = json.loads(BASE_ENTRIES_FILE.read_text())["tar_size"]
    if len(raw) != expected:
        raise AssertionError(f"base layer tar is {len(raw)} bytes, the corpus's {expected}")
    return _finish_layer(raw, mt.OCI_LAYER_GZIP)


def _base_config(layer: Layer) -> Blob:
    doc = {
        "architecture": "amd64",
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "created": BASE_CREATED,
        "history": [{"created": BASE_CREATED, "created_by": "mkbase.py: busybox-static rootfs"}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    return Blob(mt.OCI_CONFIG, json.dumps(doc).encode())


def busybox_base_image() -> Image:
    """The base image: the layer above, config Env PATH + Cmd sh, history as mkbase.py wrote it."""
    layer = busybox_base_layer()
    return image_manifest([layer], config=_base_config(layer))


def push_busybox_base(host: str, repository: str = "base/busybox", tag: str = "latest") -> str:
    """Push the base image to ``host`` (127.0.0.1:PORT); -> its reference."""
    image = busybox_base_image()
    reference = f"{host}/{repository}:{tag}"
    with tempfile.TemporaryDirectory(prefix="lamina-parity-base-") as tmp:
        layout = write_layout(Path(tmp) / "layout", image.manifest, [image.config, *image.layers], tag)
        push_layout(layout, reference, tag=tag)
    return reference


def _push_busybox_multi(host: str) -> str:
    from .multiarch import push_busybox_multi  # it imports this module: loaded when first needed

    return push_busybox_multi(host).reference


BASE_MAKERS: dict[str, BaseMaker] = {
    "base/busybox": push_busybox_base,
    "pub-parity/busybox-multi": _push_busybox_multi,  # linux/amd64 + linux/arm64 index (tests/helpers/multiarch.py)
}

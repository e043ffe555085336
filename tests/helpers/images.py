"""Tiny real images for tests: a busybox-static root filesystem, layers, OCI layouts, pushes via skopeo.

The tests have no internet, so base images are made here from Debian's ``busybox-static``. Layers are
deterministic gzip tarballs written with ``tarfile`` (sorted entries, fixed mtime, owners from a map),
so their digests are stable across runs. Pushing goes through ``skopeo``, an independent client, so a
fixture image never depends on lamina's own client being right.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lamina.oci import mediatypes as mt
from lamina.oci.layout import REF_NAME_ANNOTATION, oci_layout_json

__all__ = [
    "APPLETS",
    "BUSYBOX_BINARY",
    "DEFAULT_PATH",
    "FIXED_MTIME",
    "Blob",
    "Image",
    "Layer",
    "PushedImage",
    "PushedIndex",
    "busybox_image",
    "image_config",
    "image_manifest",
    "index_manifest",
    "layer_from_dir",
    "layer_from_files",
    "make_busybox_rootfs",
    "push_layout",
    "skopeo",
    "two_platform_index",
    "write_layout",
]

BUSYBOX_BINARY = Path("/bin/busybox")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_MTIME = 1_700_000_000  # 2023-11-14: any fixed instant keeps layer digests stable
APPLETS = [
    "sh",
    "echo",
    "cat",
    "ls",
    "mkdir",
    "rm",
    "id",
    "touch",
    "sleep",
    "env",
    "pwd",
    "whoami",
    "chmod",
    "chown",
    "test",
    "true",
    "false",
    "wc",
    "head",
    "tail",
    "grep",
    "sed",
    "tr",
    "tar",
    "gzip",
]
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\napp:x:1000:\n"


class HasHost(Protocol):
    """Anything with ``host`` = ``127.0.0.1:PORT``: the registry fixtures' objects."""

    @property
    def host(self) -> str: ...


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer(Blob):
    diff_id: str = ""


@dataclass(frozen=True)
class Image:
    """An image manifest with its config and layers, ready to write into a layout or push."""

    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers, self.manifest]


@dataclass(frozen=True)
class PushedImage:
    reference: str  # HOST/NAME:TAG
    digest: str  # manifest digest
    image: Image


@dataclass(frozen=True)
class PushedIndex:
    reference: str
    digest: str  # index digest
    index: Blob
    images: Mapping[str, Image]  # "linux/amd64" -> image


def make_busybox_rootfs(dest: Path) -> Path:
    """Write a minimal root filesystem: busybox with applet symlinks, passwd/group, /tmp 1777."""
    if not BUSYBOX_BINARY.exists():
        raise FileNotFoundError(f"{BUSYBOX_BINARY} not found: run scripts/install-system-deps.sh (busybox-static)")
    for d in ("bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev", "usr/bin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX_BINARY, dest / "bin" / "busybox")
    (dest / "bin" / "busybox").chmod(0o755)
    for applet in APPLETS:
        link = dest / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "tmp").chmod(0o1777)
    (dest / "root").chmod(0o700)
    return dest


def _tar_info(name: str, path: Path | None = None, data: bytes | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    if path is not None:
        st = path.lstat()
        info.mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        else:
            info.size = st.st_size
    else:
        assert data is not None
        info.mode, info.size = 0o644, len(data)
    return info


def _finish_layer(raw: bytes, media_type: str) -> Layer:
    blob = gzip.compress(raw, compresslevel=6, mtime=0)
    return Layer(media_type, blob, diff_id="sha256:" + hashlib.sha256(raw).hexdigest())


def layer_from_dir(
    root: Path, owners: Mapping[str, tuple[int, int]] | None = None, media_type: str = mt.OCI_LAYER_GZIP
) -> Layer:
    """A deterministic gzip layer of everything under ``root``; ``owners`` maps rel paths to uid/gid."""
    owners = {"home/app": (1000, 1000), **(owners or {})}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            for entry in sorted([*dirnames, *filenames]):
                path = base / entry
                rel = path.relative_to(root).as_posix()
                info = _tar_info(rel, path)
                info.uid, info.gid = owners.get(rel, (0, 0))
                if info.isreg():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return _finish_layer(buf.getvalue(), media_type)


def layer_from_files(files: Mapping[str, bytes], media_type: str = mt.OCI_LAYER_GZIP) -> Layer:
    """A deterministic gzip layer holding exactly ``files`` (rel path -> content, mode 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            tar.addfile(_tar_info(name, data=files[name]), io.BytesIO(files[name]))
    return _finish_layer(buf.getvalue(), media_type)


def image_config(
    layers: Iterable[Layer], architecture: str = "amd64", os_name: str = "linux", *, docker: bool = False
) -> Blob:
    layers = list(layers)
    doc = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": architecture,
        "os": os_name,
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "lamina test fixture"} for _ in layers],
    }
    return Blob(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, json.dumps(doc, sort_keys=True).encode())


def image_manifest(
    layers: Iterable[Layer], architecture: str = "amd64", config: Blob | None = None, *, docker: bool = False
) -> Image:
    layers = tuple(layers)
    config = config or image_config(layers, architecture, docker=docker)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_V2 if docker else mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    manifest = Blob(doc["mediaType"], json.dumps(doc, indent=2).encode())  # type: ignore[arg-type]
    return Image(manifest, config, layers)


def index_manifest(images: Mapping[str, Image]) -> Blob:
    """An OCI index over ``images`` keyed by ``os/arch``."""
    manifests = []
    for platform, image in images.items():
        os_name, arch = platform.split("/")[:2]
        manifests.append(image.manifest.descriptor(platform={"architecture": arch, "os": os_name}))
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    return Blob(mt.OCI_INDEX, json.dumps(doc, indent=2).encode())


def write_layout(layout: Path, top: Blob, blobs: Iterable[Blob], tag: str = "latest") -> Path:
    """Write an OCI image layout whose ``index.json`` names ``top`` (a manifest or index) as ``tag``."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_bytes(oci_layout_json())
    for blob in [*blobs, top]:
        (layout / "blobs" / "sha256" / blob.digest.split(":", 1)[1]).write_bytes(blob.data)
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [top.descriptor(annotations={REF_NAME_ANNOTATION: tag})],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run skopeo (TLS off: loopback registries speak plain HTTP); raise with its stderr on failure."""
    if not shutil.which("skopeo"):
        raise FileNotFoundError("skopeo not found: run scripts/install-system-deps.sh (package skopeo)")
    cmd = ["skopeo", "--insecure-policy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def push_layout(layout: Path, dest: str, *extra: str, tag: str = "latest") -> None:
    """``skopeo copy oci:LAYOUT:TAG docker://DEST`` with digests preserved."""
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}", f"docker://{dest}")


def busybox_image(
    registry: HasHost, name: str = "base/busybox", tag: str = "latest", rootfs: Path | None = None
) -> PushedImage:
    """Make the busybox base image (one gzip layer, linux/amd64, Cmd sh) and push it with skopeo."""
    with tempfile.TemporaryDirectory(prefix="lamina-busybox-") as tmp:
        if rootfs is None:
            rootfs = make_busybox_rootfs(Path(tmp) / "rootfs")
        image = image_manifest([layer_from_dir(rootfs)])
        layout = write_layout(Path(tmp) / "layout", image.manifest, [image.config, *image.layers], tag)
        reference = f"{registry.host}/{name}:{tag}"
        push_layout(layout, reference, tag=tag)
    return PushedImage(reference, image.digest, image)


def two_platform_index(
    registry: HasHost, name: str = "base/multi", tag: str = "latest", rootfs: Path | None = None
) -> PushedIndex:
    """Push an OCI index of linux/amd64 and linux/arm64 images: a shared busybox layer, then a layer
    whose ``/platform.txt`` names the platform (``linux/amd64\\n`` or ``linux/arm64\\n``)."""
    with tempfile.TemporaryDirectory(prefix="lamina-multi-") as tmp:
        if rootfs is None:
            rootfs = make_busybox_rootfs(Path(tmp) / "rootfs")
        base = layer_from_dir(rootfs)
        images: dict[str, Image] = {}
        for platform in ("linux/amd64", "linux/arm64"):
            marker = layer_from_files({"platform.txt": f"{platform}\n".encode()})
            images[platform] = image_manifest([base, marker], architecture=platform.split("/")[1])
        index = index_manifest(images)
        blobs = [blob for image in images.values() for blob in image.blobs()]
        layout = write_layout(Path(tmp) / "layout", index, blobs, tag)
        reference = f"{registry.host}/{name}:{tag}"
        push_layout(layout, reference, "--all", tag=tag)
    return PushedIndex(reference, index.digest, index, images)

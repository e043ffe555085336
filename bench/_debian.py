"""A Debian bookworm base image for the benchmarks that install real packages (apt, pip, npm).

``debootstrap --variant=minbase`` makes the root filesystem once (kept in a directory between runs); the
image is that tree as one gzip layer, pushed to a registry on loopback. The host's extra CA certificates
(``/usr/local/share/ca-certificates/*.crt``: a TLS-inspecting proxy's, as on some CI networks) go into the
image beside a copy of the host's bundle at ``/etc/ssl/certs/ca-certificates.crt``, and the config's
environment points pip (``PIP_CERT``) and Node (``NODE_EXTRA_CA_CERTS``) at that bundle, so package
downloads work as they do on the host. Installing Debian's ``ca-certificates`` in an image rebuilds the
bundle with the same extra CAs. Needs root and the network to deb.debian.org.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.images import Blob, Image, Layer, image_manifest, index_manifest, push_layout, write_layout

__all__ = ["DEFAULT_ROOTFS", "base_layer", "debian_rootfs", "push_debian_base", "push_debian_index"]

DEFAULT_ROOTFS = Path("/var/tmp/lamina-bench-bookworm")
_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"PIP_CERT=/{_BUNDLE}",
    f"NODE_EXTRA_CA_CERTS=/{_BUNDLE}",
]


def debian_rootfs(path: Path = DEFAULT_ROOTFS, architecture: str = "amd64") -> Path:
    """The minbase bookworm tree at ``path``, made with debootstrap on first use.

    Another ``architecture`` than amd64 (``arm64``) is debootstrap's two stages: ``--foreign`` unpacks the
    packages, then the second stage runs inside the tree through the host's binfmt_misc QEMU
    (``scripts/setup-emulation.sh``).
    """
    if not (path / "etc" / "debian_version").exists() or (path / "debootstrap").exists():
        print(f"debootstrap --variant=minbase --arch={architecture} bookworm {path} ...", flush=True)
        foreign = [] if architecture == "amd64" else ["--foreign"]
        subprocess.run(["debootstrap", "--variant=minbase", f"--arch={architecture}", *foreign, "bookworm", str(path),
                        "http://deb.debian.org/debian"], check=True, stdout=subprocess.DEVNULL)
        if foreign:
            subprocess.run(["chroot", str(path), "/debootstrap/debootstrap", "--second-stage"], check=True,
                           stdout=subprocess.DEVNULL)
    return path


def base_layer(rootfs: Path, host_cas: bool = True) -> Layer:
    """The tree as one gzip layer, plus (``host_cas``) the host's CA bundle and extra CAs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name, recursive=entry.name not in ("dev", "proc", "sys"))
        for cert in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")) if host_cas else ():
            tar.add(cert, arcname=f"usr/local/share/ca-certificates/{cert.name}")
        host_bundle = Path("/") / _BUNDLE
        if host_cas and host_bundle.is_file():
            tar.add(host_bundle.resolve(), arcname=_BUNDLE)
    raw = buf.getvalue()
    return Layer("application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(raw, compresslevel=1, mtime=0),
                 diff_id="sha256:" + hashlib.sha256(raw).hexdigest())


def _config(layer: Layer, host_cas: bool, architecture: str = "amd64") -> Blob:
    doc = {
        "created": "2024-06-01T00:00:00Z", "architecture": architecture, "os": "linux",
        "config": {"Env": _ENV if host_cas else _ENV[:1], "Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": "2024-06-01T00:00:00Z", "created_by": "debootstrap --variant=minbase bookworm"}],
    }
    return Blob("application/vnd.oci.image.config.v1+json", json.dumps(doc, sort_keys=True).encode())


def push_debian_base(rootfs: Path, host: str, work: Path, name: str = "bench/debian:bookworm",
                     host_cas: bool = True) -> str:
    """Push the base image to ``host`` (a registry on loopback) as ``name``; returns the reference.

    Without ``host_cas`` the image is the bare tree (no extra CA, no ``PIP_CERT``/``NODE_EXTRA_CA_CERTS``):
    behind a TLS-inspecting proxy, builds then bring the proxy's CA themselves (a secret or a bind mount).
    """
    layer = base_layer(rootfs, host_cas)
    image = image_manifest([layer], config=_config(layer, host_cas))
    layout = write_layout(work / ("debian-layout-" + name.replace("/", "_").replace(":", "_")), image.manifest,
                          [image.config, *image.layers])
    push_layout(layout, f"{host}/{name}")
    return f"{host}/{name}"


def push_debian_index(rootfses: dict[str, Path], host: str, work: Path, name: str, host_cas: bool = True) -> str:
    """Push an OCI index of one base image per architecture (``{"amd64": tree, "arm64": tree}``) as ``name``."""
    images: dict[str, Image] = {}
    for architecture, rootfs in rootfses.items():
        layer = base_layer(rootfs, host_cas)
        images[f"linux/{architecture}"] = image_manifest([layer], config=_config(layer, host_cas, architecture))
    index = index_manifest(images)
    blobs = [blob for image in images.values() for blob in image.blobs()]
    layout = write_layout(work / ("debian-index-" + name.replace("/", "_").replace(":", "_")), index, blobs)
    push_layout(layout, f"{host}/{name}", "--all")
    return f"{host}/{name}"

"""Cross-checks with an independent client (skopeo, containers/image): what our client pushes, skopeo
reads back byte for byte and picks the same platform from; what skopeo pushes, our client resolves."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers.registries import RegistryProcess
from lamina.client import RegistryClient, resolve_image
from lamina.oci import Descriptor, ImageManifest, Platform, digest_of
from lamina.oci import mediatypes as mt

pytestmark = pytest.mark.interop


def _skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo not installed (Debian package skopeo; scripts/install-system-deps.sh installs it)")
    return path


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _layer(name: str, content: bytes) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip of it) holding one file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return tar_bytes, gzip.compress(tar_bytes, mtime=0)


async def _push_arch(c: RegistryClient, repo: str, arch: str) -> Descriptor:
    tar_bytes, gz = _layer("arch.txt", arch.encode())
    config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [str(digest_of(tar_bytes))]}}).encode()
    await c.push_blob(repo, digest_of(gz), len(gz), gz)
    await c.push_blob(repo, digest_of(config), len(config), config, kind="config")
    manifest = ImageManifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)),
                             (Descriptor(mt.OCI_LAYER_GZIP, digest_of(gz), len(gz)),)).to_bytes()
    digest = await c.put_manifest(repo, str(digest_of(manifest)), manifest, mt.OCI_MANIFEST)
    return Descriptor(mt.OCI_MANIFEST, digest, len(manifest), platform=Platform(arch, "linux"))


async def test_skopeo_reads_what_we_push_and_agrees_on_the_platform(distribution: RegistryProcess,
                                                                   tmp_path: Path) -> None:
    skopeo = _skopeo()
    async with RegistryClient(distribution.host) as c:
        amd = await _push_arch(c, "x/multi", "amd64")
        s390 = await _push_arch(c, "x/multi", "s390x")
        index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                            "manifests": [amd.dump(), s390.dump()]}).encode()
        index_digest = await c.put_manifest("x/multi", "v1", index, mt.OCI_INDEX)
        ours = await resolve_image(c, "x/multi", "v1", Platform.from_string("linux/s390x"))
    ref = f"docker://{distribution.host}/x/multi:v1"
    raw = _run(skopeo, "inspect", "--tls-verify=false", "--raw", ref).encode()
    assert raw == index and digest_of(raw) == index_digest
    inspected = json.loads(_run(skopeo, "inspect", "--tls-verify=false", "--override-arch", "s390x", ref))
    assert inspected["Digest"] == str(index_digest)  # skopeo reports the digest of what the tag names
    assert inspected["Architecture"] == "s390x" and ours.manifest_digest == s390.digest
    _run(skopeo, "copy", "--src-tls-verify=false", "--override-arch", "s390x", ref, f"oci:{tmp_path / 'layout'}:v1")
    layout_index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert layout_index["manifests"][0]["digest"] == str(s390.digest)


async def test_we_resolve_what_skopeo_pushes(distribution: RegistryProcess, tmp_path: Path) -> None:
    skopeo = _skopeo()
    layout = tmp_path / "src"
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = digest_of(data)
        (layout / "blobs" / "sha256" / digest.encoded).write_bytes(data)
        return str(digest)

    tar_bytes, gz = _layer("hello.txt", b"from skopeo")
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["FROM=skopeo"]},
                         "rootfs": {"type": "layers", "diff_ids": [str(digest_of(tar_bytes))]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": {"mediaType": mt.OCI_CONFIG, "digest": put(config), "size": len(config)},
                           "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": put(gz), "size": len(gz)}]}).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": mt.OCI_MANIFEST, "digest": put(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    _run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{distribution.host}/y/img:v1")
    async with RegistryClient(distribution.host) as c:
        image = await resolve_image(c, "y/img", "v1", Platform.from_string("linux/amd64"))
        assert image.config.config.env == ["FROM=skopeo"]
        layer = image.manifest.layers[0]
        assert await c.fetch_blob("y/img", layer.digest, size=layer.size, kind="layer") == gz

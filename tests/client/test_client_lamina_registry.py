"""The same client operations against lamina's own registry (strict, ECR-like, with the referrers API):
the builder must need no private shortcut to talk to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.registries import RegistryProcess
from lamina.client import NotFound, PushOutcome, RegistryClient
from lamina.oci import Descriptor, ImageManifest, digest_of
from lamina.oci import mediatypes as mt


@pytest.fixture
def host(lamina_registry: RegistryProcess) -> str:
    return lamina_registry.host


async def test_blob_round_trip_chunked_and_mounted(host: str, tmp_path: Path) -> None:
    src = tmp_path / "layer"
    data = os.urandom(200_000)
    src.write_bytes(data)
    digest = digest_of(data)
    async with RegistryClient(host, monolithic_limit=40_000, chunk_size=64_000) as c:
        assert await c.push_blob("client/chunked", digest, len(data), src) == PushOutcome.UPLOADED
        assert await c.push_blob("client/chunked", digest, len(data), src) == PushOutcome.EXISTS
        sent = c.stats.uploaded["layer"]
        outcome = await c.push_blob("client/mounted", digest, len(data), src, mount_from=["client/chunked"])
        assert outcome == PushOutcome.MOUNTED and c.stats.uploaded["layer"] == sent
        dest = tmp_path / "copy"
        await c.download_blob("client/mounted", digest, dest, size=len(data))
    assert dest.read_bytes() == data


async def test_manifest_tags_and_referrers_api(host: str) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = b"lamina layer"
    async with RegistryClient(host) as c:
        await c.push_blob("client/img", digest_of(config), len(config), config, kind="config")
        await c.push_blob("client/img", digest_of(layer), len(layer), layer)
        manifest = ImageManifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)),
                                 (Descriptor(mt.OCI_LAYER_GZIP, digest_of(layer), len(layer)),)).to_bytes()
        digest = await c.put_manifest("client/img", "v1", manifest, mt.OCI_MANIFEST)
        assert (await c.get_manifest("client/img", "v1")).digest == digest
        info = await c.head_manifest("client/img", str(digest))
        assert info is not None and info.size == len(manifest) and info.media_type == mt.OCI_MANIFEST
        assert "v1" in await c.list_tags("client/img")
        subject = Descriptor(mt.OCI_MANIFEST, digest, len(manifest))
        empty = b"{}"
        await c.push_blob("client/img", digest_of(empty), 2, empty, kind="config")
        sbom = ImageManifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_EMPTY, digest_of(empty), 2),
                             (Descriptor(mt.OCI_LAYER_GZIP, digest_of(layer), len(layer)),),
                             artifact_type="application/spdx+json", subject=subject).to_bytes()
        sbom_digest = await c.put_manifest("client/img", str(digest_of(sbom)), sbom, mt.OCI_MANIFEST)
        found = await c.referrers("client/img", digest, artifact_type="application/spdx+json")
        assert [d.digest for d in found.manifests] == [sbom_digest]
        with pytest.raises(NotFound):
            await c.get_manifest("client/img", "absent")

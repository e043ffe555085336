"""Manifests, tags and referrers against real CNCF distribution over loopback."""

from __future__ import annotations

import json

import pytest

from helpers.registries import RegistryProcess
from lamina.client import NotFound, RegistryClient, RegistryError
from lamina.oci import Descriptor, ImageManifest, digest_of
from lamina.oci import mediatypes as mt

pytestmark = pytest.mark.interop  # every test here talks to CNCF distribution


async def _push_image(c: RegistryClient, repo: str, layer: bytes, *, subject: Descriptor | None = None,
                      artifact_type: str | None = None) -> tuple[bytes, Descriptor]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    await c.push_blob(repo, digest_of(config), len(config), config, kind="config")
    await c.push_blob(repo, digest_of(layer), len(layer), layer)
    manifest = ImageManifest(
        mt.OCI_MANIFEST,
        Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)),
        (Descriptor(mt.OCI_LAYER_GZIP, digest_of(layer), len(layer)),),
        artifact_type=artifact_type,
        subject=subject,
    ).to_bytes()
    return manifest, Descriptor(mt.OCI_MANIFEST, digest_of(manifest), len(manifest))


async def test_put_get_head_by_tag_and_digest(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        data, desc = await _push_image(c, "proj/app", b"layer one")
        assert await c.put_manifest("proj/app", "v1", data, mt.OCI_MANIFEST) == desc.digest
        by_tag = await c.get_manifest("proj/app", "v1")
        assert by_tag == (data, mt.OCI_MANIFEST, desc.digest)
        by_digest = await c.get_manifest("proj/app", str(desc.digest))
        assert by_digest.data == data and by_digest.digest == desc.digest
        info = await c.head_manifest("proj/app", "v1")
        assert info == (desc.digest, mt.OCI_MANIFEST, len(data))
        assert await c.head_manifest("proj/app", "nope") is None
        assert c.stats.downloaded["manifest"] == 2 * len(data)
        assert c.stats.uploaded["manifest"] == len(data)


async def test_put_by_digest_checks_bytes_first(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        data, desc = await _push_image(c, "proj/pin", b"layer")
        assert await c.put_manifest("proj/pin", str(desc.digest), data, mt.OCI_MANIFEST) == desc.digest
        with pytest.raises(RegistryError, match="does not match"):
            await c.put_manifest("proj/pin", str(digest_of(b"other")), data, mt.OCI_MANIFEST)


async def test_manifest_errors_are_parsed_from_the_spec_body(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        with pytest.raises(NotFound) as missing:
            await c.get_manifest("proj/none", "latest")
        assert missing.value.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
        assert "proj/none" in str(missing.value) and "manifest latest" in str(missing.value)
        # A manifest whose layer was never pushed: distribution answers 400 MANIFEST_BLOB_UNKNOWN.
        config = b"{}"
        await c.push_blob("proj/bad", digest_of(config), 2, config, kind="config")
        bad = ImageManifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_CONFIG, digest_of(config), 2),
                            (Descriptor(mt.OCI_LAYER_GZIP, digest_of(b"ghost"), 5),)).to_bytes()
        with pytest.raises(RegistryError) as info:
            await c.put_manifest("proj/bad", "v1", bad, mt.OCI_MANIFEST)
        assert info.value.status == 400 and info.value.code == "MANIFEST_BLOB_UNKNOWN"


async def test_list_tags(distribution: RegistryProcess) -> None:
    """(distribution 2.8 ignores ``n``; Link pagination is tested against a loopback server in test_client_faults.)"""
    async with RegistryClient(distribution.host) as c:
        data, _ = await _push_image(c, "proj/tags", b"layer")
        names = [f"t{i}" for i in range(5)]
        for name in names:
            await c.put_manifest("proj/tags", name, data, mt.OCI_MANIFEST)
        assert sorted(await c.list_tags("proj/tags", page_size=2)) == names
        assert sorted(await c.list_tags("proj/tags")) == names
        with pytest.raises(NotFound):
            await c.list_tags("proj/absent")


async def test_delete_manifest(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        data, desc = await _push_image(c, "proj/del", b"layer")
        await c.put_manifest("proj/del", "gone", data, mt.OCI_MANIFEST)
        await c.delete_manifest("proj/del", str(desc.digest))
        assert await c.head_manifest("proj/del", str(desc.digest)) is None
        with pytest.raises(NotFound):
            await c.delete_manifest("proj/del", str(desc.digest))


async def test_referrers_fall_back_to_the_tag_schema(distribution: RegistryProcess) -> None:
    """distribution 2.8 has no referrers API: the spec's fallback tag ``sha256-<hex>`` is read instead."""
    async with RegistryClient(distribution.host) as c:
        data, subject = await _push_image(c, "proj/ref", b"layer")
        await c.put_manifest("proj/ref", "v1", data, mt.OCI_MANIFEST)
        empty = await c.referrers("proj/ref", subject.digest)
        assert empty.manifests == ()
        sbom, sbom_desc = await _push_image(c, "proj/ref", b"sbom", subject=subject, artifact_type="application/spdx")
        await c.put_manifest("proj/ref", str(sbom_desc.digest), sbom, mt.OCI_MANIFEST)
        entry = Descriptor(mt.OCI_MANIFEST, sbom_desc.digest, sbom_desc.size, artifact_type="application/spdx")
        index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry.dump()]}).encode()
        await c.put_manifest("proj/ref", f"sha256-{subject.digest.encoded}", index, mt.OCI_INDEX)
        found = await c.referrers("proj/ref", subject.digest)
        assert [d.digest for d in found.manifests] == [sbom_desc.digest]
        assert (await c.referrers("proj/ref", subject.digest, artifact_type="application/spdx")).manifests
        assert (await c.referrers("proj/ref", subject.digest, artifact_type="other/type")).manifests == ()

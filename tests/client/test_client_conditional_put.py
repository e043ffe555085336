"""Conditional manifest PUTs: lamina's registry answers 412 (PreconditionFailed) when the tag moved,
CNCF distribution ignores the headers and writes — the two behaviours the cache exporter builds on."""

from __future__ import annotations

import json

import pytest

from helpers.registries import RegistryProcess
from lamina.client import RegistryClient
from lamina.client.errors import PreconditionFailed
from lamina.oci import Descriptor, ImageManifest, digest_of
from lamina.oci import mediatypes as mt


async def _manifest(c: RegistryClient, repo: str, text: str) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = text.encode()
    await c.push_blob(repo, digest_of(config), len(config), config, kind="config")
    await c.push_blob(repo, digest_of(layer), len(layer), layer)
    return ImageManifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)),
                         (Descriptor(mt.OCI_LAYER_GZIP, digest_of(layer), len(layer)),)).to_bytes()


async def test_lamina_refuses_a_stale_if_match_with_412(lamina_registry: RegistryProcess) -> None:
    async with RegistryClient(lamina_registry.host) as c:
        one, two, three = [await _manifest(c, "cond/app", t) for t in ("one", "two", "three")]
        first = await c.put_manifest("cond/app", "t", one, mt.OCI_MANIFEST, create_only=True)
        with pytest.raises(PreconditionFailed) as created:
            await c.put_manifest("cond/app", "t", two, mt.OCI_MANIFEST, create_only=True)
        assert created.value.status == 412 and "cond/app" in str(created.value)
        second = await c.put_manifest("cond/app", "t", two, mt.OCI_MANIFEST, if_match=first)
        with pytest.raises(PreconditionFailed):
            await c.put_manifest("cond/app", "t", three, mt.OCI_MANIFEST, if_match=first)  # it moved to two
        assert (await c.get_manifest("cond/app", "t")).digest == second
    with pytest.raises(ValueError, match="exclude each other"):
        async with RegistryClient(lamina_registry.host) as c:
            await c.put_manifest("cond/app", "t", one, mt.OCI_MANIFEST, if_match=first, create_only=True)


@pytest.mark.interop
async def test_distribution_ignores_the_condition(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        one, two = await _manifest(c, "cond/app", "one"), await _manifest(c, "cond/app", "two")
        await c.put_manifest("cond/app", "t", one, mt.OCI_MANIFEST)
        stale = digest_of(b"not what the tag names")
        written = await c.put_manifest("cond/app", "t", two, mt.OCI_MANIFEST, if_match=stale)
        assert (await c.get_manifest("cond/app", "t")).digest == written == digest_of(two)


async def test_lamina_says_it_checked_the_condition(lamina_registry: RegistryProcess) -> None:
    """A 201 to a conditional PUT carries ``Lamina-Tag-Condition: checked``; an unconditional one does not
    (so the cache exporter skips its re-read only where the condition was really enforced)."""
    async with RegistryClient(lamina_registry.host) as c:
        one, two = await _manifest(c, "cond/said", "one"), await _manifest(c, "cond/said", "two")
        first, checked = await c.put_manifest_checked("cond/said", "t", one, mt.OCI_MANIFEST, create_only=True)
        assert checked
        _, checked = await c.put_manifest_checked("cond/said", "t", two, mt.OCI_MANIFEST, if_match=first)
        assert checked
        _, checked = await c.put_manifest_checked("cond/said", "u", two, mt.OCI_MANIFEST)
        assert not checked


@pytest.mark.interop
async def test_distribution_does_not_say_it_checked(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        one = await _manifest(c, "cond/said", "one")
        _, checked = await c.put_manifest_checked("cond/said", "t", one, mt.OCI_MANIFEST, create_only=True)
        assert not checked

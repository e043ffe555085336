"""A client asks a registry about a blob once: what a HEAD or GET answered 200, or a push or mount made
present, is remembered per repository (a fully cached build's cache check and image push share one HEAD
per layer); a 404 is never remembered, and another repository is asked anew. Real lamina registry."""

from __future__ import annotations

import os

from helpers.registries import RegistryProcess
from lamina.client import PushOutcome, RegistryClient
from lamina.oci import digest_of


async def test_one_question_per_blob_and_repository(lamina_registry: RegistryProcess) -> None:
    data = os.urandom(3000)
    digest = digest_of(data)
    async with RegistryClient(lamina_registry.host) as writer:
        assert await writer.push_blob("known/a", digest, len(data), data) is PushOutcome.UPLOADED
        before = writer.stats.requests
        assert await writer.push_blob("known/a", digest, len(data), data) is PushOutcome.EXISTS
        assert await writer.has_blob("known/a", digest)
        assert writer.stats.requests == before  # the upload made it known: no HEAD
    async with RegistryClient(lamina_registry.host) as c:
        missing = digest_of(b"not pushed anywhere")
        assert not await c.has_blob("known/a", missing)
        assert not await c.has_blob("known/a", missing)
        assert c.stats.requests == 2  # a 404 is asked again
        assert await c.has_blob("known/a", digest)
        assert await c.has_blob("known/a", digest)
        assert c.stats.requests == 3
        assert not await c.has_blob("known/b", digest)  # another repository: its own question
        assert await c.mount_blob("known/b", digest, ["known/a"])
        requests = c.stats.requests
        assert await c.push_blob("known/b", digest, len(data), data) is PushOutcome.EXISTS
        assert c.stats.requests == requests  # mounted: known
        assert await c.fetch_blob("known/a", digest) == data
    async with RegistryClient(lamina_registry.host) as reader:
        await reader.fetch_blob("known/b", digest)
        requests = reader.stats.requests
        assert await reader.has_blob("known/b", digest) and reader.stats.requests == requests  # read it: known

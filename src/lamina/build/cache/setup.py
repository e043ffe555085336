"""Turning ``--cache-from`` / ``--cache-to`` options into importers and exporters for one build.

Every ``--cache-from`` is resolved up front and concurrently, but the importers keep the order of the
flags: the solver asks them in that order and takes the first hit, so several refs merge the same way
whatever order the registries answer in. A cache that cannot be read — missing ref, unreachable
registry, 401, foreign or corrupt content — is one ``WARNING`` line and the build goes on without it.

A ref being rewritten while it is read (a concurrent ``--cache-to``, then GC): when the config blob its
manifest names is gone, the ref is read once more (the tag has usually moved to a complete new cache);
if the blob is still gone, that is the warning. Each imported cache can then check its layer blobs
(``ImportedCache.exists``: a HEAD at the registry, a file in the layout), so the solver drops hits whose
layers were collected before an output needs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from lamina.build.cache.importer import BlobExists, ImportedCache
from lamina.build.cache.inline import InlineCacheExporter
from lamina.build.cache.registry import BlobSources, RegistryCacheExporter, Reporter, import_registry_cache
from lamina.build.cacheopts import CacheFrom, CacheTo
from lamina.build.images import LAYOUT_SOURCE_PREFIX, ImageSource, split_repository
from lamina.client import ClientPool, NotFound, RegistryError
from lamina.oci import Digest

__all__ = ["CacheRewritten", "make_cache_exporters", "resolve_cache_from"]


class CacheRewritten(Exception):
    """A cache manifest names a config blob the registry no longer has, also when read a second time."""


def _names_blob(exc: RegistryError) -> bool:
    return (exc.obj or "").startswith("blob ")


def _registry_exists(pool: ClientPool, source: str) -> BlobExists:
    host, repo = split_repository(source)

    async def exists(digest: Digest) -> bool:
        return await pool.get(host).has_blob(repo, digest)  # the image push asks the client again: no 2nd HEAD

    return exists


def _layout_exists(source: str) -> BlobExists:
    root = Path(source.removeprefix(LAYOUT_SOURCE_PREFIX))

    async def exists(digest: Digest) -> bool:
        return await asyncio.to_thread((root / "blobs" / digest.algorithm / digest.encoded).is_file)

    return exists


async def _import_registry(spec: CacheFrom, pool: ClientPool, progress: Reporter) -> ImportedCache:
    """Manifest + config; once more if the config is gone (the tag moved and the old config was collected)."""
    assert spec.ref is not None
    try:
        return await import_registry_cache(pool, spec.ref)
    except NotFound as exc:
        if not _names_blob(exc):
            raise  # the ref itself is not there
        first = exc.obj
    try:
        cache = await import_registry_cache(pool, spec.ref)
    except NotFound as exc:
        if not _names_blob(exc):
            raise
        raise CacheRewritten(
            f"its manifest names config {exc.obj}, which the registry no longer has (the ref is being rewritten "
            "or its blobs were deleted)"
        ) from None
    progress.message(f"WARNING: cache {spec.label}: config {first} was gone (the ref was being rewritten); "
                     "read the ref again")
    return cache


async def _resolve(spec: CacheFrom, pool: ClientPool, progress: Reporter) -> ImportedCache:
    if spec.type == "local":
        from lamina.build.cache.layout import import_layout_cache  # the OCI-layout backend: only when asked for

        cache = await asyncio.to_thread(import_layout_cache, spec)
    else:
        cache = await _import_registry(spec, pool, progress)
    if cache.source is not None:
        local = cache.source.startswith(LAYOUT_SOURCE_PREFIX)
        cache.exists = _layout_exists(cache.source) if local else _registry_exists(pool, cache.source)
    return cache


async def resolve_cache_from(specs: Sequence[CacheFrom], pool: ClientPool, progress: Reporter) -> list[ImportedCache]:
    """The readable caches, in flag order; each unreadable one is a warning."""
    results = await asyncio.gather(*(_resolve(spec, pool, progress) for spec in specs), return_exceptions=True)
    caches: list[ImportedCache] = []
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, ImportedCache):
            progress.message(f"importing cache {spec.label}: {len(result)} records")
            caches.append(result)
        elif isinstance(result, NotFound):
            progress.message(f"WARNING: cache {spec.label} not found, building without it")
        elif isinstance(result, Exception):
            progress.message(f"WARNING: cache {spec.label} not used: {result}")
        else:
            raise result  # KeyboardInterrupt, CancelledError
    return caches


def make_cache_exporters(
    specs: Sequence[CacheTo], pool: ClientPool, images: ImageSource, known: BlobSources, progress: Reporter
) -> list[RegistryCacheExporter]:
    def kind(name: str) -> type[RegistryCacheExporter]:
        if name == "local":
            from lamina.build.cache.layout import LayoutCacheExporter  # only when asked for

            return LayoutCacheExporter
        return {"registry": RegistryCacheExporter, "inline": InlineCacheExporter}[name]

    return [kind(spec.type)(spec, pool, images, known, progress) for spec in specs]

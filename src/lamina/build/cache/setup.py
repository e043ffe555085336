"""Turning ``--cache-from`` / ``--cache-to`` options into importers and exporters for one build.

Every ``--cache-from`` is resolved up front and concurrently, but the importers keep the order of the
flags: the solver asks them in that order and takes the first hit, so several refs merge the same way
whatever order the registries answer in. A cache that cannot be read — missing ref, unreachable
registry, 401, foreign or corrupt content — is one ``WARNING`` line and the build goes on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from lamina.build.cache.importer import ImportedCache
from lamina.build.cache.inline import InlineCacheExporter
from lamina.build.cache.registry import BlobSources, RegistryCacheExporter, Reporter, import_registry_cache
from lamina.build.cacheopts import CacheFrom, CacheTo
from lamina.build.images import ImageSource
from lamina.client import ClientPool, NotFound

__all__ = ["make_cache_exporters", "resolve_cache_from"]


async def _resolve(spec: CacheFrom, pool: ClientPool) -> ImportedCache:
    if spec.type == "local":
        from lamina.build.cache.layout import import_layout_cache  # the OCI-layout backend: only when asked for

        return await asyncio.to_thread(import_layout_cache, spec)
    assert spec.ref is not None
    return await import_registry_cache(pool, spec.ref)


async def resolve_cache_from(specs: Sequence[CacheFrom], pool: ClientPool, progress: Reporter) -> list[ImportedCache]:
    """The readable caches, in flag order; each unreadable one is a warning."""
    results = await asyncio.gather(*(_resolve(spec, pool) for spec in specs), return_exceptions=True)
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

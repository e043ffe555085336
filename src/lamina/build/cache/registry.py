"""``type=registry`` caches: import = GET manifest + GET config; export = blobs, config, manifest.

Import reads exactly two documents (the cache manifest by tag, then its config blob, both verified by
digest) and never a layer: hits are lazy :class:`LayerRef` s whose ``source`` is the cache repository.
An image whose config embeds ``moby.buildkit.cache.v0`` (``--cache-to type=inline``) is read the same way.

Export makes the cache repository hold every layer blob — HEAD first; else a cross-repository mount
from a repository of the same registry known to hold it (the layer's own source, the local index's
blob sources); only then the bytes, fetched lazily if needed and uploaded — all blobs concurrently,
then the config (HEAD first), then the manifest under the tag. An unchanged re-export therefore sends
nothing but the manifest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lamina.build.cache.base import CachedResult, LayerRef
from lamina.build.cache.graph import CacheExport, RecordGraph, plan_export
from lamina.build.cache.importer import ImportedCache, inline_config, read_cache_manifest
from lamina.build.cacheopts import CacheTo
from lamina.build.images import ImageSource, split_repository
from lamina.client import ClientPool, PushOutcome, RegistryClient
from lamina.oci import CacheConfig, Digest, parse_reference
from lamina.oci import mediatypes as mt

__all__ = [
    "BlobSources",
    "CacheExportError",
    "ExportSummary",
    "RegistryCacheExporter",
    "check_compression",
    "import_registry_cache",
]


class CacheExportError(Exception):
    """Writing a cache failed (the build fails unless ``ignore-error=true``)."""


class BlobSources(Protocol):
    def sources(self, digest: Digest) -> list[str]: ...

    def add_source(self, digest: Digest, repository: str) -> None: ...


class Reporter(Protocol):
    def message(self, text: str) -> None: ...


@dataclass
class ExportSummary:
    """What one export did, for the progress line, the bench and the tests."""

    target: str
    manifest_digest: Digest | None = None
    records: int = 0
    layers: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # exists / mounted / uploaded -> count
    seconds: float = 0.0
    skipped: str | None = None

    def line(self) -> str:
        if self.skipped:
            return f"cache export to {self.target} skipped: {self.skipped}"
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()) if n)
        return (
            f"exported cache to {self.target} ({self.manifest_digest}): {self.records} records, {self.layers} layers"
            f" ({parts or 'none sent'}) in {self.seconds:.2f}s"
        )


async def import_registry_cache(pool: ClientPool, ref: str, name: str | None = None) -> ImportedCache:
    """Resolve a cache ref (any export form, or an image with an inline cache); raises on any failure."""
    reference = parse_reference(ref)
    client = pool.get(reference.registry)
    repo = reference.repository
    fetched = await client.get_manifest(repo, reference.reference)
    manifest = read_cache_manifest(fetched.data, fetched.media_type)
    raw = await client.fetch_blob(repo, manifest.config.digest, size=manifest.config.size, kind="config")
    layers = manifest.layers
    if manifest.form == "inline":
        raw, layers = inline_config(raw, layers)
    return ImportedCache(name or ref, CacheConfig.parse(raw), layers, f"{reference.registry}/{repo}",
                         manifest.annotations)


_COMPRESSIONS = {
    "gzip": {mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP},
    "zstd": {mt.OCI_LAYER_ZSTD},
    "uncompressed": {mt.OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar"},
}


def check_compression(export: CacheExport, spec: CacheTo) -> None:
    """``force-compression=true``: every exported layer must already be in ``compression``.

    Cached layers keep the compression they were built with (``lamina build --compression``), as
    BuildKit keeps existing blobs without ``force-compression``; lamina does not recompress them, so a
    forced mismatch is an export error naming the layer rather than a silently different cache.
    """
    if not spec.force_compression:
        return
    for layer in export.layers:
        if layer.descriptor.media_type not in _COMPRESSIONS[spec.compression]:
            raise ValueError(
                f"force-compression=true,compression={spec.compression}: layer {layer.descriptor.digest} is "
                f"{layer.descriptor.media_type} (lamina does not recompress cached layers; build with "
                f"--compression {spec.compression})"
            )


class RegistryCacheExporter:
    """CacheExporter for ``--cache-to type=registry`` (and the shared add/plan part for the other backends)."""

    def __init__(
        self, spec: CacheTo, pool: ClientPool, images: ImageSource, known: BlobSources, progress: Reporter
    ) -> None:
        self.spec = spec
        self.pool = pool
        self.images = images
        self.known = known
        self.progress = progress
        self.graph = RecordGraph()
        self.summary = ExportSummary(spec.label)

    def add(self, key: Digest, inputs: Mapping[str, Any], result: CachedResult, *, slot: str) -> None:
        self.graph.add(key, inputs, result)

    def link(self, key: Digest, inputs: Mapping[str, Any], *, slot: str) -> None:
        self.graph.add(key, inputs, None)

    def plan(self, target: CachedResult) -> CacheExport | None:
        export = plan_export(
            self.graph, target.key, mode=self.spec.mode, image_manifest=self.spec.image_manifest,
            oci_mediatypes=self.spec.oci_mediatypes,
        )
        if export is not None:
            check_compression(export, self.spec)
        return export

    async def finalize(self, target: CachedResult) -> None:
        started = time.monotonic()
        try:
            export = self.plan(target)
            if export is None:
                self.summary.skipped = "nothing to export (no layer in the build's cache records)"
            else:
                await self.write(export)
        except Exception as exc:
            message = f"exporting cache to {self.spec.label}: {exc}"
            if not self.spec.ignore_error:
                raise CacheExportError(message) from exc
            self.progress.message(f"WARNING: {message} (ignored: ignore-error=true)")
            return
        self.summary.seconds = time.monotonic() - started
        self.progress.message(self.summary.line())

    async def write(self, export: CacheExport) -> None:
        assert self.spec.ref is not None
        reference = parse_reference(self.spec.ref)
        client = self.pool.get(reference.registry)
        repo = reference.repository
        outcomes = await asyncio.gather(
            *(self._push_layer(client, reference.registry, repo, layer) for layer in export.layers)
        )
        await client.push_blob(repo, export.config_digest, len(export.config_bytes), export.config_bytes,
                               kind="config")
        digest = await client.put_manifest(repo, reference.reference, export.manifest_bytes,
                                           export.manifest_media_type)
        self.summary.manifest_digest = digest
        self.summary.records = len(export.config.records)
        self.summary.layers = len(export.layers)
        for outcome in outcomes:
            self.summary.outcomes[outcome] = self.summary.outcomes.get(outcome, 0) + 1

    async def _push_layer(self, client: RegistryClient, registry: str, repo: str, layer: LayerRef) -> str:
        digest = layer.descriptor.digest
        home = f"{registry}/{repo}"
        if await client.head_blob(repo, digest) is not None:
            self.known.add_source(digest, home)
            return str(PushOutcome.EXISTS)
        candidates = ([layer.source] if layer.source else []) + self.known.sources(digest)
        mount_from = list(dict.fromkeys(r for host, r in map(split_repository, candidates) if host == registry))
        if mount_from and await client.mount_blob(repo, digest, mount_from):
            self.known.add_source(digest, home)
            return str(PushOutcome.MOUNTED)
        path = await self.images.fetch(layer)
        outcome = await client.push_blob(repo, digest, layer.descriptor.size, path)
        self.known.add_source(digest, home)
        return str(outcome)

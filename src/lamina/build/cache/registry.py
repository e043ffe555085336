"""``type=registry`` caches: import = GET manifest + GET config; export = blobs, config, manifest.

Import reads exactly two documents (the cache manifest by tag, then its config blob, both verified by
digest) and never a layer: hits are lazy :class:`LayerRef` s whose ``source`` is the cache repository.
An image whose config embeds ``moby.buildkit.cache.v0`` (``--cache-to type=inline``) is read the same way.

Export makes the cache repository hold every layer blob — HEAD first; else a cross-repository mount
from a repository of the same registry known to hold it (the layer's own source, the local index's
blob sources); only then the bytes, fetched lazily if needed and uploaded — all blobs concurrently,
then the config (HEAD first), then the manifest under the tag. An unchanged re-export therefore sends
nothing but the manifest.

With ``merge=true`` (the default) the blobs go first, then the tag's current cache is read and merged
with this build's records (:mod:`lamina.build.cache.cumulative`), and the manifest PUT is conditional:
``If-Match: "<digest read>"``, or ``If-None-Match: *`` when the tag did not exist. A registry that
honours it (lamina's) answers 412 when another writer moved the tag in between: re-read, merge again,
retry (at most :data:`CONFLICT_RETRIES` times, with jittered backoff). A registry that ignores the
headers (CNCF distribution, ECR) writes unconditionally, so the exporter re-reads the tag after a short
settle time and, when this build's records are missing from what it finds, merges again and rewrites
(at most :data:`VERIFY_ROUNDS` times; the progress output says when that bound is hit).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from lamina.build.cache.base import CachedResult, LayerRef
from lamina.build.cache.fingerprint import INPUTS_ANNOTATION
from lamina.build.cache.fingerprint import decode as decode_prints
from lamina.build.cache.graph import CacheExport, RecordGraph, plan_export
from lamina.build.cache.importer import ImportedCache, inline_config, read_cache_manifest
from lamina.build.cacheopts import CacheTo
from lamina.build.images import BlobSources, ImageSource, split_repository
from lamina.client import ClientPool, NotFound, PushOutcome, RegistryClient
from lamina.client.errors import PreconditionFailed
from lamina.oci import CacheConfig, Descriptor, Digest, FormatError, ImageIndex, parse_manifest, parse_reference
from lamina.oci import mediatypes as mt

if TYPE_CHECKING:
    from lamina.build.cache.cumulative import CurrentCache
    from lamina.build.cache.mountsync import CacheMountSync

CONFLICT_RETRIES = 8  # 412 answers (another writer moved the tag) before the export gives up
VERIFY_ROUNDS = 4  # re-read-and-merge rounds on a registry that ignores conditional PUTs

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
    merged: int | None = None  # records the target held before (None: not merged)
    conflicts: int = 0  # conditional PUTs refused with 412
    rewrites: int = 0  # merges again after a re-read found this build's records missing
    bound_hit: bool = False  # VERIFY_ROUNDS re-reads were not enough

    def line(self) -> str:
        if self.skipped:
            return f"cache export to {self.target} skipped: {self.skipped}"
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()) if n)
        merged = f", merged with {self.merged} records there" if self.merged else ""
        if self.conflicts or self.rewrites:
            merged += f" ({self.conflicts} conflicts, {self.rewrites} rewrites after re-reading)"
        return (
            f"exported cache to {self.target} ({self.manifest_digest}): {self.records} records, {self.layers} layers"
            f" ({parts or 'none sent'}){merged} in {self.seconds:.2f}s"
        )


async def import_registry_cache(pool: ClientPool, ref: str, name: str | None = None) -> ImportedCache:
    """Resolve a cache ref (any export form, or an image with an inline cache); raises on any failure."""
    reference = parse_reference(ref)
    client = pool.get(reference.registry)
    repo = reference.repository
    fetched = await client.get_manifest(repo, reference.reference)
    images = _image_entries(fetched.data, fetched.media_type)
    if images:
        config, layers = await _import_inline_index(client, repo, images, ref)
        return ImportedCache(name or ref, config, layers, f"{reference.registry}/{repo}")
    manifest = read_cache_manifest(fetched.data, fetched.media_type)
    raw = await client.fetch_blob(repo, manifest.config.digest, size=manifest.config.size, kind="config")
    layers = manifest.layers
    if manifest.form == "inline":
        raw, layers = inline_config(raw, layers)
    return ImportedCache(name or ref, CacheConfig.parse(raw), layers, f"{reference.registry}/{repo}",
                         manifest.annotations)


def _image_entries(data: bytes, media_type: str) -> tuple[Descriptor, ...]:
    """The image manifests an image index lists (a multi-platform image); () for anything else."""
    try:
        doc = parse_manifest(data, media_type)
    except FormatError:
        return ()
    if not isinstance(doc, ImageIndex) or any(d.media_type == mt.BUILDKIT_CACHE_CONFIG for d in doc.manifests):
        return ()
    return tuple(d for d in doc.manifests if d.media_type in (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_V2))


async def _import_inline_index(
    client: RegistryClient, repo: str, entries: tuple[Descriptor, ...], ref: str
) -> tuple[CacheConfig, tuple[Descriptor, ...]]:
    """A multi-platform image built with ``--cache-to type=inline``: each platform's image embeds the records
    of its own chain; as BuildKit's importer walks every manifest of the index, they are read and merged into
    one cache that serves every platform. Images without an inline cache (attestations) are passed over."""
    merged: CacheConfig | None = None
    layers: dict[Digest, Descriptor] = {}
    for entry in entries:
        fetched = await client.get_manifest(repo, str(entry.digest))
        manifest = read_cache_manifest(fetched.data, fetched.media_type)
        if manifest.form != "inline":
            continue
        raw = await client.fetch_blob(repo, manifest.config.digest, size=manifest.config.size, kind="config")
        try:
            raw, annotated = inline_config(raw, manifest.layers)
        except FormatError:
            continue  # this platform's image carries no inline cache
        part = CacheConfig.parse(raw)
        if merged is None:
            merged = part
        else:
            from lamina.oci.cachemerge import merge  # the merge of caches is loaded when there is one to do

            merged = merge(merged, part)
        for desc in annotated:
            layers.setdefault(desc.digest, desc)
    if merged is None:
        raise FormatError(f"{ref} is an image index whose images carry no inline cache")
    return merged, tuple(layers.values())


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
        self.cache_mounts: CacheMountSync | None = None  # the build's RUN cache mounts, exported as packs

    def add(self, key: Digest, inputs: Mapping[str, Any], result: CachedResult, *, slot: str) -> None:
        self.graph.add(key, inputs, result)

    def link(self, key: Digest, inputs: Mapping[str, Any], *, slot: str) -> None:
        self.graph.add(key, inputs, None)

    def plan(self, target: CachedResult, *more: CachedResult) -> CacheExport | None:
        """The export of the build's final result(s): ``more`` are the other platforms' (one export for all)."""
        export = plan_export(
            self.graph, target.key, mode=self.spec.mode, image_manifest=self.spec.image_manifest,
            oci_mediatypes=self.spec.oci_mediatypes, also=tuple(result.key for result in more),
        )
        if export is not None:
            check_compression(export, self.spec)
        return export

    async def finalize(self, target: CachedResult, *more: CachedResult) -> None:
        started = time.monotonic()
        try:
            export = self.plan(target, *more)
            if export is None:
                self.summary.skipped = "nothing to export (no layer in the build's cache records)"
            else:
                if self.cache_mounts is not None:
                    export = await self.cache_mounts.attach(export, self.spec)
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
        from lamina.build.cache.cumulative import NO_CACHE, combine  # exporting only: never on an import's path

        assert self.spec.ref is not None
        reference = parse_reference(self.spec.ref)
        client = self.pool.get(reference.registry)
        repo = reference.repository
        outcomes = await asyncio.gather(
            *(self._push_layer(client, reference.registry, repo, layer) for layer in export.layers)
        )
        for outcome in outcomes:
            self.summary.outcomes[outcome] = self.summary.outcomes.get(outcome, 0) + 1
        tag = reference.reference
        merging = self.spec.merge and reference.digest is None  # a digest cannot move: nothing to merge into
        now = datetime.now(UTC)
        current = await self.read_current(client, repo, tag) if merging else NO_CACHE
        self.summary.merged = len(current.config.records) if merging else None
        while True:
            started = time.monotonic()
            final = combine(export, current, self.spec, now)
            if final is None:
                self.summary.skipped = "nothing left to export after max-size / max-age"
                return
            try:
                digest, checked = await self._put(client, repo, tag, final, current if merging else None)
            except PreconditionFailed:
                self.summary.conflicts += 1
                if self.summary.conflicts > CONFLICT_RETRIES:
                    raise CacheExportError(
                        f"{self.spec.ref} moved {self.summary.conflicts} times while merging (HTTP 412 each time); "
                        "retry the build, or use merge=false to replace the cache"
                    ) from None
                await asyncio.sleep(random.uniform(0, min(1.0, 0.05 * 2**self.summary.conflicts)))
                current = await self.read_current(client, repo, tag)
                continue
            break
        if merging and not checked and not self.summary.conflicts:  # the registry may have ignored the condition
            final, digest = await self._verify(client, repo, tag, export, final, digest, time.monotonic() - started)
        self.summary.manifest_digest = digest
        self.summary.records = len(final.config.records)
        self.summary.layers = len(final.descriptors)

    async def _put(
        self, client: RegistryClient, repo: str, tag: str, final: CacheExport, current: CurrentCache | None
    ) -> tuple[Digest, bool]:
        """Push the config and the manifest; True when the registry says it checked the condition (then a
        success means no other writer's update was lost, and no re-read is needed)."""
        await client.push_blob(repo, final.config_digest, len(final.config_bytes), final.config_bytes, kind="config")
        if current is None:
            return await client.put_manifest(repo, tag, final.manifest_bytes, final.manifest_media_type), False
        return await client.put_manifest_checked(repo, tag, final.manifest_bytes, final.manifest_media_type,
                                                 if_match=current.digest, create_only=current.digest is None)

    async def _verify(
        self, client: RegistryClient, repo: str, tag: str, ours: CacheExport, final: CacheExport, digest: Digest,
        took: float,
    ) -> tuple[CacheExport, Digest]:
        """Re-read the tag after a settle time (longer than another writer's read-to-write window) and merge
        again while this build's records are missing from it; at most VERIFY_ROUNDS rewrites."""
        from lamina.build.cache.cumulative import combine, missing_results

        settle = min(3.0, max(0.1, 3 * took))
        for _ in range(VERIFY_ROUNDS + 1):
            await asyncio.sleep(settle + random.uniform(0, settle / 2))  # jitter: losers do not rewrite in step
            info = await client.head_manifest(repo, tag)
            if info is not None and info.digest == digest:
                return final, digest
            found = await self.read_current(client, repo, tag)
            if not missing_results(ours.config, final.config, found.config):
                return final, found.digest or digest
            if self.summary.rewrites == VERIFY_ROUNDS:
                break
            self.summary.rewrites += 1
            merged = combine(ours, found, self.spec, datetime.now(UTC))
            if merged is None:
                return final, digest
            try:
                digest, _ = await self._put(client, repo, tag, merged, found)
            except PreconditionFailed:
                self.summary.conflicts += 1  # it does honour conditions after all; the next round re-reads
                continue
            final = merged
        self.summary.bound_hit = True
        self.progress.message(
            f"WARNING: {self.spec.ref}: this build's records were still missing after {VERIFY_ROUNDS} re-reads "
            "(the registry ignores conditional updates and other writers kept replacing the cache)"
        )
        return final, digest

    async def read_current(self, client: RegistryClient, repo: str, tag: str) -> CurrentCache:
        """The cache the tag holds now; a tag holding something unreadable is replaced (with a warning)."""
        from lamina.build.cache.cumulative import NO_CACHE, CurrentCache
        from lamina.oci.cachemerge import canonical

        try:
            fetched = await client.get_manifest(repo, tag)
        except NotFound:
            return NO_CACHE
        try:
            manifest = read_cache_manifest(fetched.data, fetched.media_type)
            if manifest.form == "inline":
                raise FormatError("an image with an inline cache, not a cache manifest")
            raw = await client.fetch_blob(repo, manifest.config.digest, size=manifest.config.size, kind="config")
            config = CacheConfig.parse(raw)
            canonical(config)  # the graph is sound (no cycles)
        except (FormatError, NotFound) as exc:
            self.progress.message(f"WARNING: {self.spec.ref} holds no readable cache ({exc}); replacing it")
            return CurrentCache(fetched.digest)
        prints = decode_prints((manifest.annotations or {}).get(INPUTS_ANNOTATION, ""))
        return CurrentCache(fetched.digest, config, {d.digest: d for d in manifest.layers}, prints)

    async def _push_layer(self, client: RegistryClient, registry: str, repo: str, layer: LayerRef) -> str:
        digest = layer.descriptor.digest
        home = f"{registry}/{repo}"
        if await client.has_blob(repo, digest):  # the image push may have just made it present
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

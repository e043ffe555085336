"""Prune a build cache's records by age, in place under its tag: the ``cache_records_unused_days`` rule.

A BuildKit cache manifest shared by many writers grows with every merged export; ``cache_unused_days``
can only expire the whole manifest. This rule rewrites it instead: results (a record's layer chain)
unused for longer than the rule's age are dropped (:func:`lamina.oci.cachemerge.prune`, by each result's
``lamina.lastUsedAt``, else its ``createdAt``), records kept only as links of kept records, layers no
kept result uses leave the manifest (their blobs go at the next GC), except a RUN cache mount's packs
(``dev.lamina.cachemount.*``) while their cache was exported within the age and a record is kept; and
the new manifest moves the tag with a conditional update on the digest that was read
(:class:`lamina.store.TagCondition`): a cache exported meanwhile is never overwritten, the rule reads it
again and prunes that (at most :data:`ATTEMPTS` times). Both export forms: the image manifest whose
config is the cacheconfig, and BuildKit's legacy index (``manifests[]`` = layers + the cacheconfig).

When nothing would be left, the manifest is deleted as ``cache_unused_days`` deletes it (never an empty
manifest), only if its tags did not change meanwhile.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from lamina.oci import (
    DEFAULT_MAX_JSON_DEPTH,
    CacheConfig,
    Descriptor,
    FormatError,
    ImageIndex,
    ImageManifest,
    ManifestKind,
    classify,
    digest_of,
    exceeds_json_depth,
    parse_manifest,
)
from lamina.oci import mediatypes as mt
from lamina.oci.cachemerge import prune, result_keys
from lamina.store import (
    ManifestRecord,
    ManifestReference,
    MissingReference,
    Storage,
    StoreError,
    TagCondition,
    TagPreconditionFailed,
)

__all__ = ["ATTEMPTS", "CachePrune", "PrunedCache", "prune_cache_tag", "pruned_manifest"]

log = logging.getLogger("lamina.registry.lifecycle")
ATTEMPTS = 5  # re-reads after a concurrent export moved the tag, before giving up until the next run
INPUTS_ANNOTATION = "dev.lamina.cache.inputs"  # lamina's per-record fingerprints (lamina.build.cache.fingerprint)
PACK_EXPORTED = "dev.lamina.cachemount.exported"  # a RUN cache mount's pack (lamina.build.cache.mountsync)
_CONFIG_MAX = 256 << 20  # the largest cacheconfig read into memory (lamina's client fetches no bigger one)


@dataclass(frozen=True, slots=True)
class PrunedCache:
    """The rewritten cache: manifest bytes, its media type, and the new cacheconfig blob."""

    manifest: bytes
    media_type: str
    config: bytes
    records: tuple[int, int]  # before, after
    layers: tuple[int, int]  # before, after (manifest layer descriptors)


@dataclass(frozen=True, slots=True)
class CachePrune:
    """One tag's cache rewritten (or, ``dry_run``, that would be); ``new_digest`` None = deleted whole."""

    repository: str
    tag: str
    old_digest: str
    new_digest: str | None
    records: tuple[int, int]
    layers: tuple[int, int]
    reason: str


def _filter_fingerprints(text: str, keep: set[str]) -> str | None:
    """The inputs annotation with only the kept records' fingerprints (None: unreadable, leave it)."""
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True), bufsize=1 << 16)
        if exceeds_json_depth(raw, DEFAULT_MAX_JSON_DEPTH):  # a pushed annotation: anyone's JSON
            return None
        doc = json.loads(raw)
    except (ValueError, zlib.error):
        return None
    if not isinstance(doc, dict):
        return None
    kept = {key: value for key, value in doc.items() if key in keep}
    data = json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(data, 9)).decode()


def _split(manifest: ImageManifest | ImageIndex) -> tuple[Descriptor, tuple[Descriptor, ...]]:
    """(cacheconfig descriptor, layer descriptors) of either export form."""
    if isinstance(manifest, ImageManifest):
        return manifest.config, manifest.layers
    configs = [d for d in manifest.manifests if d.media_type == mt.BUILDKIT_CACHE_CONFIG]
    if len(configs) != 1:
        raise FormatError(f"legacy cache index lists {len(configs)} cacheconfig descriptors, expected 1")
    return configs[0], tuple(d for d in manifest.manifests if d.media_type != mt.BUILDKIT_CACHE_CONFIG)


def pruned_manifest(
    manifest: ImageManifest | ImageIndex, config_bytes: bytes, max_age: timedelta, now: datetime
) -> PrunedCache | None:
    """The cache without results unused for ``max_age`` (pure); None when nothing would change.

    An empty ``PrunedCache.layers[1]`` means nothing is left: the caller deletes instead of rewriting."""
    config_desc, layers = _split(manifest)
    config = CacheConfig.parse(config_bytes)
    sizes = {d.digest: d.size for d in layers}
    kept = prune(config, now=now, max_age=max_age, layer_sizes=sizes)
    if result_keys(kept) == result_keys(config):
        return None
    kept_blobs = {layer.blob for layer in kept.layers}
    new_layers = tuple(d for d in layers if d.digest in kept_blobs or (kept_blobs and _recent_pack(d, now, max_age)))
    new_config = kept.to_bytes()
    new_desc = replace(config_desc, digest=digest_of(new_config), size=len(new_config))
    annotations = dict(manifest.annotations or {})
    if INPUTS_ANNOTATION in annotations:
        filtered = _filter_fingerprints(annotations[INPUTS_ANNOTATION], {str(r.digest) for r in kept.records})
        if filtered is not None:
            annotations[INPUTS_ANNOTATION] = filtered
    if isinstance(manifest, ImageManifest):
        rewritten: ImageManifest | ImageIndex = replace(
            manifest, config=new_desc, layers=new_layers, annotations=annotations or None
        )
    else:
        rewritten = replace(manifest, manifests=(*new_layers, new_desc), annotations=annotations or None)
    media_type = manifest.media_type or (mt.OCI_MANIFEST if isinstance(manifest, ImageManifest) else mt.OCI_INDEX)
    return PrunedCache(rewritten.to_bytes(), media_type, new_config, (len(config.records), len(kept.records)),
                       (len(layers), len(new_layers)))


def _recent_pack(desc: Descriptor, now: datetime, max_age: timedelta) -> bool:
    """A RUN cache mount's pack (no record names one) stays while its cache was exported within ``max_age``."""
    exported = (desc.annotations or {}).get(PACK_EXPORTED)
    if not exported:
        return False
    try:
        return now - datetime.fromisoformat(exported.replace("Z", "+00:00")) <= max_age
    except ValueError:
        return False


def _record(old: ManifestRecord, pruned: PrunedCache, manifest: ImageManifest | ImageIndex) -> ManifestRecord:
    """The rewritten manifest's record; push and pull times stay the cache's (a rewrite is not a use)."""
    return ManifestRecord(
        repository=old.repository,
        digest=digest_of(pruned.manifest),
        media_type=pruned.media_type,
        content=pruned.manifest,
        kind=classify(manifest).value,
        artifact_type=old.artifact_type,
        subject=old.subject,
        annotations_json=json.dumps(dict(manifest.annotations)) if manifest.annotations else None,
        pushed_at=old.pushed_at,
        last_pulled_at=old.last_pulled_at,
    )


def _references(manifest: ImageManifest | ImageIndex) -> list[ManifestReference]:
    descriptors = manifest.blob_references() if isinstance(manifest, ImageManifest) else manifest.manifests
    return [ManifestReference(d.digest, d.size) for d in descriptors]


def _read_config(storage: Storage, record: ManifestRecord) -> tuple[ImageManifest | ImageIndex, bytes] | None:
    manifest = parse_manifest(record.content, record.media_type)
    if classify(manifest) is not ManifestKind.BUILD_CACHE:
        return None
    desc, _ = _split(manifest)
    linked = storage.metadata.linked_blob_size(record.repository, desc.digest)
    data = storage.blobs.read_small(desc.digest, _CONFIG_MAX) if linked is not None else None
    if data is None:
        raise StoreError(f"cacheconfig {desc.digest} of {record.repository}@{record.digest} is not in the store "
                         f"(or over {_CONFIG_MAX} bytes)")
    if not desc.digest.verify(data):
        raise StoreError(f"cacheconfig {desc.digest} of {record.repository}@{record.digest} does not match its digest")
    return manifest, data


def prune_cache_tag(
    storage: Storage, repository: str, tag: str, days: float, now: float, *, dry_run: bool = False
) -> CachePrune | None:
    """Prune the cache under ``repository:tag`` (see the module doc); None when nothing changed. Blocking."""
    moment = datetime.fromtimestamp(now, UTC)
    reason = f"cache records unused for {days:g} days"
    for _ in range(ATTEMPTS):
        old = storage.metadata.get_manifest(repository, tag)
        if old is None:
            return None
        try:
            read = _read_config(storage, old)
            if read is None:
                return None
            manifest, config = read
            pruned = pruned_manifest(manifest, config, timedelta(days=days), moment)
        except (FormatError, StoreError) as exc:  # one broken cache never stops the rules for the others
            log.warning("lifecycle: %s:%s is not a cache lamina can prune (%s); left as is", repository, tag, exc)
            return None
        if pruned is None:
            return None
        new_digest = None if pruned.layers[1] == 0 else str(digest_of(pruned.manifest))
        result = CachePrune(repository, tag, str(old.digest), new_digest, pruned.records, pruned.layers, reason)
        if dry_run:
            return result
        if new_digest is None:
            if storage.metadata.delete_manifest_if_unchanged(repository, str(old.digest), old.tags):
                return result
            continue  # tags moved (a new export): read again
        if _store(storage, old, pruned, tag):
            return result
    log.warning("lifecycle: %s:%s kept moving (%d concurrent exports); pruning it at the next run",
                repository, tag, ATTEMPTS)
    return None


def _store(storage: Storage, old: ManifestRecord, pruned: PrunedCache, tag: str) -> bool:
    """Write the config blob and move ``tag`` if it still names ``old``; False when it moved (412)."""
    config_digest = digest_of(pruned.config)
    storage.blobs.put(config_digest, pruned.config)
    storage.metadata.link_blob(old.repository, config_digest, len(pruned.config),
                               present=lambda: storage.blobs.size(config_digest) is not None)
    manifest = parse_manifest(pruned.manifest, pruned.media_type)
    try:
        storage.metadata.put_manifest(_record(old, pruned, manifest), _references(manifest), tag,
                                      condition=TagCondition(match=frozenset({old.digest})))
    except TagPreconditionFailed:
        return False
    except MissingReference as exc:  # a layer the old manifest listed was collected meanwhile
        raise StoreError(f"rewriting {old.repository}:{tag} ({old.digest}): {exc}") from exc
    return True

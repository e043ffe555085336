"""The one importer behind every ``--cache-from`` backend: a resolved cacheconfig answering lookups lazily.

A backend (registry, local OCI layout, inline image config) fetches the manifest and the cacheconfig
only, then hands :func:`read_cache_manifest` the bytes; the form is detected here (BuildKit's
``image-manifest=true`` OCI manifest, the legacy OCI index / Docker manifest list, or an image whose
config embeds ``moby.buildkit.cache.v0``). :class:`ImportedCache` then answers ``lookup(key)`` from
memory with a chain of :class:`LayerRef` s — descriptors, diffIDs from ``containerd.io/uncompressed``,
times from ``buildkit/createdat`` and ``source`` = where the blobs live — without downloading a layer.
A record whose chain names a blob the manifest does not describe is skipped (a miss, never a failure).

A ref can be rewritten while a build reads it (a concurrent ``--cache-to``, then GC of the old layers):
``exists`` (set by :mod:`lamina.build.cache.setup`) lets :meth:`ImportedCache.missing` tell the solver
which lazy layers are gone before an output needs their bytes; those blobs miss from then on.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from lamina.build.cache.base import CachedResult, LayerRef
from lamina.build.cache.fingerprint import INPUTS_ANNOTATION, Fingerprints
from lamina.build.cache.fingerprint import decode as decode_prints
from lamina.build.cache.graph import CREATED_ANNOTATION, UNCOMPRESSED_ANNOTATION, layer_media_type
from lamina.build.copykeys import ALIAS_SELECTOR
from lamina.oci import (
    CacheConfig,
    Descriptor,
    Digest,
    DigestError,
    FormatError,
    ImageIndex,
    ImageManifest,
    parse_digest,
    parse_manifest,
)
from lamina.oci import mediatypes as mt

__all__ = [
    "INLINE_CACHE_KEY",
    "BlobExists",
    "CacheManifest",
    "ImportedCache",
    "inline_config",
    "read_cache_manifest",
]

INLINE_CACHE_KEY = "moby.buildkit.cache.v0"

BlobExists = Callable[[Digest], Awaitable[bool]]  # does the cache's source still hold this blob?


@dataclass(frozen=True)
class CacheManifest:
    """What a cache manifest says before the config is fetched: the form, the config and the layer blobs."""

    form: str  # "image-manifest" | "legacy-index" | "inline"
    config: Descriptor  # the cacheconfig (or, inline, the image config that embeds it)
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] | None = None


def read_cache_manifest(data: bytes, media_type: str) -> CacheManifest:
    """Detect the export form of a manifest; raises FormatError for anything that is not a build cache."""
    manifest = parse_manifest(data, media_type)
    if isinstance(manifest, ImageIndex):
        configs = [d for d in manifest.manifests if d.media_type == mt.BUILDKIT_CACHE_CONFIG]
        if len(configs) != 1:
            raise FormatError("an image index, not a build cache (no single cacheconfig entry)")
        layers = tuple(d for d in manifest.manifests if d.media_type != mt.BUILDKIT_CACHE_CONFIG)
        return CacheManifest("legacy-index", configs[0], layers, manifest.annotations)
    assert isinstance(manifest, ImageManifest)
    if manifest.config.media_type == mt.BUILDKIT_CACHE_CONFIG:
        return CacheManifest("image-manifest", manifest.config, manifest.layers, manifest.annotations)
    if manifest.config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return CacheManifest("inline", manifest.config, manifest.layers)
    raise FormatError(f"not a build cache: config media type {manifest.config.media_type}")


def inline_config(image_config: bytes, layers: tuple[Descriptor, ...]) -> tuple[bytes, tuple[Descriptor, ...]]:
    """The cacheconfig embedded in an image config, and the layers annotated with the config's diffIDs
    and history times (what a cache manifest's ``containerd.io/uncompressed`` / ``buildkit/createdat`` say)."""
    try:
        doc = json.loads(image_config)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"image config is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(INLINE_CACHE_KEY), str):
        raise FormatError(f"image has no inline cache ({INLINE_CACHE_KEY} missing from its config)")
    try:
        raw = base64.b64decode(doc[INLINE_CACHE_KEY], validate=True)
    except ValueError:
        raise FormatError(f"{INLINE_CACHE_KEY} is not valid base64") from None
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise FormatError(f"image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    history = [h for h in doc.get("history") or [] if isinstance(h, dict) and not h.get("empty_layer")]
    times = [h.get("created") for h in history] if len(history) == len(layers) else [None] * len(layers)
    annotated = []
    for desc, diff_id, created in zip(layers, diff_ids, times, strict=True):
        notes = {**(desc.annotations or {}), UNCOMPRESSED_ANNOTATION: diff_id}
        if isinstance(created, str):  # the layer times the image was built with: the same image again
            notes[CREATED_ANNOTATION] = created
        annotated.append(Descriptor(desc.media_type, desc.digest, desc.size, annotations=notes))
    return raw, tuple(annotated)


class ImportedCache:
    """CacheImporter + MissExplainer + BlobVerifier over one resolved cacheconfig (``name`` = the ref, for
    CACHED (ref)); ``exists`` checks a blob at the source (None: the blobs are not checked)."""

    exists: BlobExists | None = None

    def __init__(
        self, name: str, config: CacheConfig, layers: tuple[Descriptor, ...], source: str | None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._prints = Fingerprints(decode_prints((annotations or {}).get(INPUTS_ANNOTATION, "")))
        self.config = config
        self.source = source  # "host/repo" holding the blobs, or "oci-layout:/dir" for a local cache
        self.layers = layers  # every blob the manifest lists (cache-mount packs too: lamina.build.cache.mountsync)
        self._blobs: dict[Digest, LayerRef] = {}
        for desc in layers:
            ref = _layer_ref(desc, source)
            if ref is not None:
                self._blobs.setdefault(desc.digest, ref)
        self._records = {record.digest: i for i, record in enumerate(config.records)}
        self._children: dict[int, int] = {}
        for record in config.records:
            for group in record.inputs[:1]:
                for item in group:
                    self._children[item.link] = self._children.get(item.link, 0) + 1
        self._bad: set[Digest] = set()

    def __len__(self) -> int:
        return len(self.config.records)

    def lookup(self, key: Digest) -> CachedResult | None:
        """The first usable result of record ``key``; a ``COPY --from`` definition key's record (an input link
        with selector ``ALIAS_SELECTOR``) answers with the content key it links to, which the chain continues
        from (see :mod:`lamina.build.copykeys`)."""
        index = self._records.get(key)
        if index is None:
            return None
        record = self.config.records[index]
        key = self.alias(key) or key
        for result in record.results:
            try:
                chain = self.config.layer_chain(result.layer)
            except FormatError:
                continue
            refs = [self._blobs.get(blob) for blob in chain]
            if any(ref is None or ref.descriptor.digest in self._bad for ref in refs):
                continue
            layers = tuple(ref for ref in refs if ref is not None)
            return CachedResult(key, layers, result.created_at or layers[-1].created or "", self.name)
        return None

    def alias(self, key: Digest) -> Digest | None:
        """The content key record ``key`` links to with selector ``ALIAS_SELECTOR``, with or without results."""
        index = self._records.get(key)
        if index is None:
            return None
        for group in self.config.records[index].inputs:
            for item in group:
                if item.selector == ALIAS_SELECTOR and 0 <= item.link < len(self.config.records):
                    return self.config.records[item.link].digest
        return None

    def forget_blob(self, digest: Digest) -> None:
        """A blob turned out unreadable (missing, corrupt): every chain through it misses from now on."""
        self._bad.add(digest)

    def holds(self, digest: Digest) -> bool:
        return digest in self._blobs

    async def missing(self, layers: Collection[LayerRef]) -> set[Digest]:
        """Of the lazy ``layers`` this cache gave (their ``source`` is this cache's), the blobs its source no
        longer has; they miss from now on. A check that fails (unreachable, 401) counts as present."""
        if self.exists is None:
            return set()
        check = self.exists
        wanted = sorted({layer.descriptor.digest for layer in layers
                         if layer.source == self.source and layer.descriptor.digest in self._blobs})
        answers = await asyncio.gather(*(check(digest) for digest in wanted), return_exceptions=True)
        gone = {digest for digest, there in zip(wanted, answers, strict=True) if there is False}
        self._bad |= gone
        return gone

    def explain(self, slot: str, inputs: Mapping[str, Any]) -> str | None:
        """The first input that differs from the nearest record on the same parent (from the fingerprints
        lamina exports); for a cache without them (BuildKit's), how many other steps that parent has."""
        reason = self._prints.explain(slot, inputs)
        if reason:
            return f"{reason} (vs {self.name})"
        try:
            parent = parse_digest(slot)
        except DigestError:
            return None
        index = self._records.get(parent)
        if index is None:
            return None
        others = self._children.get(index, 0)
        if others:
            return f"no record in {self.name} for this step (it holds {others} other step(s) on the same parent)"
        return None


def _layer_ref(desc: Descriptor, source: str | None) -> LayerRef | None:
    annotations = desc.annotations or {}
    try:
        diff_id = parse_digest(annotations.get(UNCOMPRESSED_ANNOTATION, ""))
    except DigestError:
        return None  # without a diffID the layer cannot be stacked; records through it miss
    plain = Descriptor(layer_media_type(desc.media_type, True), desc.digest, desc.size)  # same bytes, OCI name
    return LayerRef(plain, diff_id, annotations.get(CREATED_ANNOTATION), source)

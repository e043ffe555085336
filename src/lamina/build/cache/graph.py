"""From the steps of a build to BuildKit's cache export: a cacheconfig.v0 plus the manifest that carries it.

Pure (no I/O), shared by every export backend (registry, local OCI layout, inline). :class:`RecordGraph`
collects what the solver reports — each step's key, its inputs (``parent`` key, ``from.stage`` key) and
its lazy result — and :func:`plan_export` turns it into a :class:`CacheExport`:

- ``mode=max``: every step of every stage has its result; ``mode=min``: only the steps on the final
  result's parent chain have results, the other records they link to (``COPY --from`` stages, the base
  image) are kept as pure links, as BuildKit writes them.
- layers: one entry per chain prefix (blob + parent index), so the same blob on two different parents
  stays two entries; records point at the top layer of their chain with ``createdAt``.
- the graph goes through :func:`lamina.oci.normalize` (sorted by digest), so an unchanged build
  re-exports a byte-identical config; the manifest lists each blob once, sorted by digest, annotated
  with ``containerd.io/uncompressed`` (diffID) and ``buildkit/createdat``; the manifest carries the
  steps' input fingerprints (:mod:`lamina.build.cache.fingerprint`) for miss explanations.

A build whose export would hold no layer gives ``None``: registries like ECR and GCR reject an
image manifest with an empty ``layers`` array, so the caller skips the export with a message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lamina.build.cache.base import CachedResult, LayerRef
from lamina.build.cache.fingerprint import INPUTS_ANNOTATION, fingerprint
from lamina.build.cache.fingerprint import encode as encode_prints
from lamina.build.copykeys import ALIAS_FIELD, ALIAS_SELECTOR
from lamina.oci import (
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    Descriptor,
    Digest,
    ImageIndex,
    ImageManifest,
    canonical_json,
    digest_of,
    normalize,
    parse_digest,
)
from lamina.oci import mediatypes as mt

__all__ = [
    "CREATED_ANNOTATION",
    "UNCOMPRESSED_ANNOTATION",
    "CacheExport",
    "RecordGraph",
    "assemble",
    "cache_manifest",
    "layer_descriptor",
    "layer_media_type",
    "plan_export",
]

UNCOMPRESSED_ANNOTATION = "containerd.io/uncompressed"
CREATED_ANNOTATION = "buildkit/createdat"

_TO_DOCKER = {mt.OCI_LAYER_GZIP: mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER: "application/vnd.docker.image.rootfs.diff.tar"}
_TO_OCI = {v: k for k, v in _TO_DOCKER.items()}


def layer_media_type(media_type: str, oci: bool) -> str:
    """The layer's media type in the export's flavour (the bytes are the same; zstd exists only as OCI)."""
    return _TO_OCI.get(media_type, media_type) if oci else _TO_DOCKER.get(media_type, media_type)


@dataclass
class _Node:
    """One reported cache key: its inputs document and its result (None: a link only)."""

    inputs: dict[str, Any]
    result: CachedResult | None  # None: a pure link (the step's key is known, its result is not)


@dataclass
class RecordGraph:
    """What the solver reported, by cache key. Later reports of the same key replace earlier ones."""

    nodes: dict[Digest, _Node] = field(default_factory=dict)

    def add(self, key: Digest, inputs: Mapping[str, Any], result: CachedResult | None) -> None:
        if result is None and key in self.nodes:
            return  # a link never hides a result
        self.nodes[key] = _Node(dict(inputs), result)

    def links(self, key: Digest) -> list[list[Digest]]:
        """The input groups of ``key``: [[parent]] and, for ``COPY --from=<stage>``, [[source stage]]; for a
        ``COPY --link`` merge, [[parent], [link layer]] as BuildKit's MergeOp records its two inputs."""
        node = self.nodes.get(key)
        if node is None:
            return []
        groups: list[list[Digest]] = []
        parent = node.inputs.get("parent")
        if parent:
            groups.append([parse_digest(parent)])
        source = node.inputs.get("from")
        if isinstance(source, dict) and source.get("stage"):
            groups.append([parse_digest(source["stage"])])
        if node.inputs.get("op") == "merge" and node.inputs.get("layer"):
            groups.append([parse_digest(node.inputs["layer"])])
        return groups


@dataclass(frozen=True)
class CacheExport:
    """Everything an export writes: the config bytes, the manifest bytes, and the blobs (sorted, unique).

    ``layers`` are the blobs this build brings (to push); ``descriptors`` every layer the manifest lists
    (more than ``layers`` once merged with the cache already at the ref); ``prints`` the fingerprints
    the manifest carries, by record key."""

    config: CacheConfig
    config_bytes: bytes
    layers: tuple[LayerRef, ...]  # media types already in the export's flavour
    manifest_bytes: bytes
    manifest_media_type: str
    descriptors: tuple[Descriptor, ...] = ()
    prints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def config_digest(self) -> Digest:
        return digest_of(self.config_bytes)

    @property
    def manifest_digest(self) -> Digest:
        return digest_of(self.manifest_bytes)


def _closure(graph: RecordGraph, roots: list[Digest]) -> set[Digest]:
    seen: set[Digest] = set()
    stack = list(roots)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        for group in graph.links(key):
            stack.extend(group)
    return seen


def _main_chain(graph: RecordGraph, target: Digest) -> set[Digest]:
    chain: set[Digest] = set()
    key: Digest | None = target
    while key is not None and key in graph.nodes and key not in chain:
        chain.add(key)
        inputs = graph.nodes[key].inputs
        if inputs.get("op") == "merge" and inputs.get("layer"):  # a link layer keeps its result: other bases
            chain.add(parse_digest(inputs["layer"]))            # find it when the merged step misses
        parent = inputs.get("parent")
        key = parse_digest(parent) if parent else None
    return chain


def plan_export(
    graph: RecordGraph, target: Digest, *, mode: str, image_manifest: bool = True, oci_mediatypes: bool = True,
    also: Sequence[Digest] = (),
) -> CacheExport | None:
    """The cache export of ``target`` (see the module docstring); ``None`` when it would hold no layer.

    ``also``: the final results of the other platforms of a multi-platform build; ``mode=min`` keeps their
    chains too, so one export holds every platform's records (as BuildKit's does)."""
    if mode == "max":
        with_results = set(graph.nodes)
        keys = _closure(graph, list(graph.nodes))
    else:
        targets = [t for t in (target, *also) if t in graph.nodes]
        with_results = set().union(*(_main_chain(graph, t) for t in (target, *also)))
        keys = _closure(graph, targets)
    aliases = [k for k, n in graph.nodes.items() if n.inputs.get(ALIAS_FIELD) and k not in with_results
               and parse_digest(n.inputs[ALIAS_FIELD]) in with_results]
    with_results |= set(aliases)  # a COPY --from definition key stays with its content key: a warm build
    keys |= _closure(graph, aliases)  # hits it without solving the source stage (lamina.build.copykeys)
    layer_index: dict[tuple[int, Digest], int] = {}  # (parent entry, blob) -> entry: one per chain prefix
    layers: list[CacheLayer] = []
    blobs: dict[Digest, LayerRef] = {}

    def chain_top(chain: tuple[LayerRef, ...]) -> int:
        parent = -1
        for ref in chain:
            digest = ref.descriptor.digest
            entry = layer_index.get((parent, digest))
            if entry is None:
                entry = layer_index[(parent, digest)] = len(layers)
                layers.append(CacheLayer(digest, parent))
                blobs.setdefault(digest, ref)
            parent = entry
        return parent

    order = sorted(keys)
    record_index = {key: i for i, key in enumerate(order)}
    records = []
    for key in order:
        results: tuple[CacheResult, ...] = ()
        node = graph.nodes.get(key)
        if node is not None and key in with_results and node.result is not None and node.result.layers:
            results = (CacheResult(chain_top(node.result.layers), node.result.created_at or None),)
        inputs = tuple(
            tuple(CacheInput(record_index[k]) for k in group if k in record_index) for group in graph.links(key)
        )
        alias = node.inputs.get(ALIAS_FIELD) if node is not None else None
        if alias and parse_digest(alias) in record_index:
            inputs = (*inputs, (CacheInput(record_index[parse_digest(alias)], ALIAS_SELECTOR),))
        records.append(CacheRecord(key, results, tuple(g for g in inputs if g)))
    if not blobs:
        return None
    config = normalize(CacheConfig(tuple(layers), tuple(records)))
    refs = tuple(_flavoured(blobs[d], oci_mediatypes) for d in sorted(blobs))
    prints = {str(key): fingerprint(graph.nodes[key].inputs) for key in order if key in graph.nodes}
    return assemble(config, refs, tuple(layer_descriptor(ref) for ref in refs), prints,
                    image_manifest=image_manifest, oci_mediatypes=oci_mediatypes)


def assemble(
    config: CacheConfig, layers: tuple[LayerRef, ...], descriptors: tuple[Descriptor, ...],
    prints: Mapping[str, Mapping[str, Any]], *, image_manifest: bool, oci_mediatypes: bool,
) -> CacheExport:
    """The export of a finished graph: config bytes, and the manifest listing ``descriptors`` (sorted by
    digest) with the fingerprints of ``config``'s records (the others are dropped)."""
    config_bytes = config.to_bytes()
    keys = {str(record.digest) for record in config.records}
    kept = {parse_digest(k): v for k, v in prints.items() if k in keys}
    annotations = {INPUTS_ANNOTATION: encode_prints(kept)} if kept else None
    ordered = tuple(sorted(descriptors, key=lambda d: str(d.digest)))
    manifest, media_type = cache_manifest(
        config_bytes, ordered, image_manifest=image_manifest, oci=oci_mediatypes, annotations=annotations
    )
    return CacheExport(config, config_bytes, layers, manifest, media_type, ordered, dict(prints))


def _flavoured(ref: LayerRef, oci: bool) -> LayerRef:
    media_type = layer_media_type(ref.descriptor.media_type, oci)
    if media_type == ref.descriptor.media_type:
        return ref
    return replace(ref, descriptor=replace(ref.descriptor, media_type=media_type))


def layer_descriptor(ref: LayerRef) -> Descriptor:
    """A layer as a cache manifest lists it: ``buildkit/createdat`` and ``containerd.io/uncompressed``."""
    annotations: dict[str, str] = {}
    if ref.created:
        annotations[CREATED_ANNOTATION] = ref.created
    annotations[UNCOMPRESSED_ANNOTATION] = str(ref.diff_id)
    return Descriptor(ref.descriptor.media_type, ref.descriptor.digest, ref.descriptor.size, annotations=annotations)


def cache_manifest(
    config_bytes: bytes, descriptors: tuple[Descriptor, ...], *, image_manifest: bool, oci: bool,
    annotations: dict[str, str] | None = None,
) -> tuple[bytes, str]:
    """The manifest bytes and media type: an OCI image manifest whose config is the cacheconfig
    (``image-manifest=true``), or the legacy index listing the layer blobs and then the cacheconfig."""
    config = Descriptor(mt.BUILDKIT_CACHE_CONFIG, digest_of(config_bytes), len(config_bytes))
    if image_manifest:
        return ImageManifest(mt.OCI_MANIFEST, config, descriptors, annotations=annotations).to_bytes(), mt.OCI_MANIFEST
    media_type = mt.OCI_INDEX if oci else mt.DOCKER_MANIFEST_LIST
    index = ImageIndex(media_type, (*descriptors, config), annotations=annotations)
    return canonical_json(index.dump()), media_type

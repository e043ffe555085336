"""Cache exports that add up: this build's records merged into the cache a ref already holds, then pruned.

Pure (no I/O), shared by the registry and local-layout exporters. :class:`CurrentCache` is what the
target holds now (read by the backend: manifest + cacheconfig, never a layer); :func:`combine` returns
the export to write:

- ``merge=true`` (the default): the union of the current records and this build's
  (:func:`lamina.oci.cachemerge.merge`); this build's results are marked used now
  (:func:`~lamina.oci.cachemerge.refresh`: a time less than :data:`REFRESH` old is kept, so an unchanged
  re-export writes the same bytes); ``merge=false``: this build's records only, as BuildKit writes;
- then retention, ``max-age`` / ``max-size`` (:func:`lamina.oci.cachemerge.prune`), also on the
  current cache's results whose blobs its manifest does not list (they could not be imported);
- the manifest lists the blobs the kept records use: this build's with its own descriptors, the
  others as the current manifest described them (the blobs are already in the target), and the input
  fingerprints of both (this build's win);
- and the RUN cache mounts' packs (:func:`lamina.build.cache.mountsync.carry_packs`): this build's, and
  with ``merge=true`` the other caches' the target holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lamina.build.cache.graph import CacheExport, assemble, layer_media_type
from lamina.build.cache.mountsync import carry_packs
from lamina.build.cacheopts import CacheTo
from lamina.oci import CacheConfig, Descriptor, Digest
from lamina.oci.cachemerge import merge, prune, refresh, result_keys, touch

__all__ = ["REFRESH", "CurrentCache", "combine", "missing_results"]

REFRESH = timedelta(hours=1)  # last-used times are refreshed at most this often


@dataclass(frozen=True)
class CurrentCache:
    """The cache at the export's target before this export: ``digest`` of its manifest (None = none)."""

    digest: Digest | None
    config: CacheConfig = field(default_factory=lambda: CacheConfig((), ()))
    layers: Mapping[Digest, Descriptor] = field(default_factory=dict)  # blob -> descriptor in its manifest
    prints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


NO_CACHE = CurrentCache(None)


def combine(ours: CacheExport, current: CurrentCache, spec: CacheTo, now: datetime) -> CacheExport | None:
    """The export to write over ``current`` (see the module docstring); None when no layer would be left."""
    granularity = min(REFRESH, spec.max_age / 10) if spec.max_age is not None else REFRESH
    if spec.merge:
        config = merge(current.config, refresh(ours.config, current.config, now, granularity))
        others = current.layers
        prints = {**current.prints, **ours.prints}
    else:
        config, others, prints = touch(ours.config, now), {}, dict(ours.prints)
    own = {ref.descriptor.digest: ref for ref in ours.layers}
    sizes = {digest: desc.size for digest, desc in others.items()} | {d: r.descriptor.size for d, r in own.items()}
    config = prune(config, now=now, max_age=spec.max_age, max_size=spec.max_size, layer_sizes=sizes)
    if not config.layers:
        return None
    kept = {layer.blob for layer in config.layers}
    by_digest = {desc.digest: desc for desc in ours.descriptors}
    descriptors = []
    for digest in sorted(kept):
        if digest in own:
            descriptors.append(by_digest[digest])
        else:
            desc = others[digest]
            media_type = layer_media_type(desc.media_type, spec.oci_mediatypes)
            descriptors.append(Descriptor(media_type, desc.digest, desc.size, annotations=desc.annotations))
    layers = tuple(ref for digest, ref in sorted(own.items()) if digest in kept)
    pack_refs, packs = carry_packs(ours, current.layers, spec, now)  # RUN cache mounts (lamina.build.cache.mountsync)
    return assemble(config, (*layers, *pack_refs), (*descriptors, *packs), prints,
                    image_manifest=spec.image_manifest, oci_mediatypes=spec.oci_mediatypes)


def missing_results(ours: CacheConfig, written: CacheConfig, found: CacheConfig) -> int:
    """How many of this build's results that the export wrote the cache now at the target lacks (another
    writer replaced it without them: a registry that ignored the conditional PUT)."""
    return len((result_keys(ours) & result_keys(written)) - result_keys(found))

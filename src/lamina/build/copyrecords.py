"""The solver's records of the COPY steps that BuildKit keys twice (see :mod:`lamina.build.copykeys`).

A ``COPY --link`` step gives the exporters its link layer under the layer's own key (its definition keys
as aliases of a content key), the merge onto the parent, and the step's definition key as an alias of
the merge when the two differ; a ``COPY --from=<stage>`` gives its content key and the definition keys
that are aliases of it. Every cache exporter gets them, the local state included, so the next build —
here or on an empty runner through a remote cache — resolves a definition key to the key its stage
continues from (:meth:`CopyRecords._chain_key`), even from a record ``mode=min`` keeps without a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from lamina.build import cachekey, copykeys
from lamina.build.cache.base import CachedResult, CacheExporter, CacheImporter, LayerRef
from lamina.build.ops import CopyStep
from lamina.oci import Digest, parse_digest

if TYPE_CHECKING:
    from lamina.build.state import BuildState

__all__ = ["CopyRecords"]


class CopyRecords:
    """Mixed into :class:`lamina.build.solver.Solver`, whose importers, exporters and state it uses."""

    if TYPE_CHECKING:
        importers: list[CacheImporter]
        exporters: list[CacheExporter]
        state: BuildState

        def _lookup(self, key: Digest) -> CachedResult | None: ...

        def _emit(self, exporter: CacheExporter, call: Callable[[], None]) -> None: ...

    def _chain_key(self, key: Digest) -> Digest | None:
        """The key a hit on ``key`` continues from (a COPY --from definition key names its content key, even in a
        record kept without its result, as ``mode=min`` keeps other stages); None when nothing knows ``key``."""
        hit = self._lookup(key)
        if hit is not None:
            return hit.key
        for importer in self.importers:
            if isinstance(importer, copykeys.AliasResolver) and (target := importer.alias(key)) is not None:
                return target
        return None

    def _content_record(self, step: CopyStep, parent: Digest, link: dict[str, Any] | None) -> dict[str, Any]:
        """The inputs a content key's record keeps: the copy's (checksum left out), or for ``--link`` the merge
        onto the link layer's content key (which the link layer's definition key names)."""
        if link is None:
            return copykeys.content_inputs(step, parent, None)
        layer = cachekey.key_of(link)
        return cachekey.merge_inputs(parent, self._chain_key(layer) or layer)

    def _record_link(
        self, step: CopyStep, parent: Digest, key: Digest, inputs: dict[str, Any], links: list[dict[str, Any]],
        layer: CachedResult, layers: tuple[LayerRef, ...],
    ) -> Digest:
        """Record a ``COPY --link`` step whose link layer is ``layer`` (a hit or just made; its ``key`` the
        link key, or the content key for ``--from=<stage>``): the link layer under its key (its definition keys
        ``links`` as aliases), the merge onto ``parent``, and the step's definition key ``key`` as an alias
        when the merge is keyed by the content key. Returns the key the stage continues from."""
        made = replace(layer, origin="this build")  # the aliases may be new to the local state too
        scratch = links[0]["parent"]
        for given in links:
            definition = cachekey.key_of(given)
            if definition == layer.key:
                self._add_hit(definition, given, layer, scratch)
            else:
                self._add_hit(definition, copykeys.alias_inputs(given, layer.key), made, scratch)
        if all(cachekey.key_of(given) != layer.key for given in links):  # the content-keyed layer itself
            self._add_hit(layer.key, copykeys.content_inputs(step, parse_digest(scratch), None), layer, scratch)
        merged_inputs = cachekey.merge_inputs(parent, layer.key)
        merged = cachekey.key_of(merged_inputs)
        result = CachedResult(merged, (*layers, layer.layers[-1]), layer.created_at, "this build")
        self._add_hit(merged, merged_inputs, result, str(parent))
        if merged != key:
            self._add_hit(key, copykeys.alias_inputs(inputs, merged), result, str(parent))
        return merged

    def _add_hit(self, key: Digest, inputs: dict[str, Any], hit: CachedResult, slot: str) -> None:
        for exporter in self.exporters:
            if exporter is not self.state.cache or hit.origin != "local":  # remote hits become local records too
                self._emit(exporter, partial(exporter.add, key, inputs, hit, slot=slot))


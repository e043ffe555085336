"""BuildKit's remote cache config, ``application/vnd.buildkit.cacheconfig.v0``.

The layout of BuildKit's ``cache/remotecache/v1`` spec, as plain frozen data:

- ``layers[i]``: a layer blob and the index of its parent layer (``-1`` = none). Go's ``omitempty``
  drops a zero ``parent``, so a missing ``parent`` means 0 and a root layer says ``"parent": -1``.
- ``records[j]``: a cache key (``digest``), the results stored under it (``layers``: the top layer
  of a chain, with ``createdAt``), and ``inputs[k]``: the records that can feed input ``k``, each with
  an optional ``selector``.
- lamina's one addition: ``lamina.lastUsedAt`` on a result (RFC 3339), when a build last used or produced
  it — what cache retention (:mod:`lamina.oci.cachemerge`) ages by. Go's ``encoding/json`` ignores
  unknown fields, so BuildKit imports the config unchanged.

``dump`` writes the exact bytes BuildKit writes: fields in Go struct order, empty fields omitted,
compact JSON, so an unchanged cache re-exports a byte-identical config (and the same digest).
Sorting the graph is the exporter's job (:func:`normalize`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .descriptor import FormatError
from .digest import Digest, DigestError, parse_digest

__all__ = ["LAST_USED_FIELD", "CacheConfig", "CacheInput", "CacheLayer", "CacheRecord", "CacheResult", "normalize"]


def _digest(value: Any, where: str) -> Digest:
    try:
        return parse_digest(value)
    except DigestError as exc:
        raise FormatError(f"cacheconfig {where}: {exc}") from None


def _int(value: Any, where: str, default: int = 0) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"cacheconfig {where}: must be an integer")
    return value


@dataclass(frozen=True, slots=True)
class CacheLayer:
    """One ``layers`` entry of BuildKit's cacheconfig.v0: a blob and the index of its parent layer (-1: none)."""

    blob: Digest
    parent: int = -1
    annotations: Mapping[str, Any] | None = field(default=None, compare=False)

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"blob": str(self.blob)}
        if self.parent != 0:
            out["parent"] = self.parent
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


LAST_USED_FIELD = "lamina.lastUsedAt"


@dataclass(frozen=True, slots=True)
class CacheResult:
    """One ``results`` entry of a cache record: the index of the top layer of its chain, and when it was made."""

    layer: int
    created_at: str | None = None
    last_used: str | None = None  # lamina's ``lamina.lastUsedAt``; BuildKit ignores it

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.layer}
        if self.created_at:
            out["createdAt"] = self.created_at
        if self.last_used:
            out[LAST_USED_FIELD] = self.last_used
        return out


@dataclass(frozen=True, slots=True)
class CacheInput:
    """One ``inputs`` entry of a cache record: the index of the parent record, and the selector of that edge."""

    link: int
    selector: str = ""

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.selector:
            out["selector"] = self.selector
        out["link"] = self.link
        return out


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """One ``records`` entry of cacheconfig.v0: a cache key digest, its results and its inputs (per input index)."""

    digest: Digest
    results: tuple[CacheResult, ...] = ()
    inputs: tuple[tuple[CacheInput, ...], ...] = ()

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.results:
            out["layers"] = [r.dump() for r in self.results]
        out["digest"] = str(self.digest)
        if self.inputs:
            out["inputs"] = [[i.dump() for i in group] for group in self.inputs]
        return out


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """BuildKit's cacheconfig.v0 document (``application/vnd.buildkit.cacheconfig.v0``): layers and records."""

    layers: tuple[CacheLayer, ...]
    records: tuple[CacheRecord, ...]

    @classmethod
    def parse(cls, data: bytes) -> CacheConfig:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"cacheconfig is not valid JSON: {exc}") from None
        except RecursionError:
            raise FormatError("cacheconfig nests JSON too deeply to parse") from None
        if not isinstance(doc, dict):
            raise FormatError("cacheconfig must be a JSON object")
        layers_doc = doc.get("layers") or []
        records_doc = doc.get("records") or []
        if not isinstance(layers_doc, list) or not isinstance(records_doc, list):
            raise FormatError("cacheconfig: 'layers' and 'records' must be arrays")
        layers = []
        for i, entry in enumerate(layers_doc):
            if not isinstance(entry, dict):
                raise FormatError(f"cacheconfig layers[{i}]: must be an object")
            parent = _int(entry.get("parent"), f"layers[{i}].parent")
            if parent < -1 or parent >= len(layers_doc) or parent == i:
                raise FormatError(f"cacheconfig layers[{i}].parent: index {parent} out of range")
            layers.append(CacheLayer(_digest(entry.get("blob"), f"layers[{i}].blob"), parent, entry.get("annotations")))
        records = []
        for j, entry in enumerate(records_doc):
            if not isinstance(entry, dict):
                raise FormatError(f"cacheconfig records[{j}]: must be an object")
            results = []
            for r in entry.get("layers") or []:
                index = _int(r.get("layer") if isinstance(r, dict) else None, f"records[{j}].layers")
                if not 0 <= index < len(layers):
                    raise FormatError(f"cacheconfig records[{j}]: layer index {index} out of range")
                created, used = r.get("createdAt"), r.get(LAST_USED_FIELD)
                results.append(CacheResult(index, created if isinstance(created, str) else None,
                                           used if isinstance(used, str) else None))
            inputs = []
            for group in entry.get("inputs") or []:
                if not isinstance(group, list):
                    raise FormatError(f"cacheconfig records[{j}].inputs: must be arrays")
                items = []
                for inp in group:
                    link = _int(inp.get("link") if isinstance(inp, dict) else None, f"records[{j}].inputs")
                    if not 0 <= link < len(records_doc):
                        raise FormatError(f"cacheconfig records[{j}]: input link {link} out of range")
                    selector = inp.get("selector") or ""
                    if not isinstance(selector, str):
                        raise FormatError(f"cacheconfig records[{j}]: selector must be a string")
                    items.append(CacheInput(link, selector))
                inputs.append(tuple(items))
            records.append(
                CacheRecord(_digest(entry.get("digest"), f"records[{j}].digest"), tuple(results), tuple(inputs))
            )
        return cls(tuple(layers), tuple(records))

    def dump(self) -> dict[str, Any]:
        return {"layers": [x.dump() for x in self.layers], "records": [r.dump() for r in self.records]}

    def to_bytes(self) -> bytes:
        return json.dumps(self.dump(), separators=(",", ":")).encode()

    def layer_chain(self, index: int) -> list[Digest]:
        """Blob digests from the root layer up to ``layers[index]``."""
        chain: list[Digest] = []
        seen: set[int] = set()
        while index >= 0:
            if index in seen:
                raise FormatError("cacheconfig: layer parents form a cycle")
            seen.add(index)
            chain.append(self.layers[index].blob)
            index = self.layers[index].parent
        chain.reverse()
        return chain


def normalize(config: CacheConfig) -> CacheConfig:
    """Sort layers and records by digest and rewrite every index, as BuildKit's marshaller does.

    Layers sort by blob digest (ties by parent blob), records by their digest; inputs within a group
    by (link target digest, selector). The result depends only on the graph, not on the order it was
    built in, so two exports of the same build give the same bytes.
    """

    def layer_key(i: int) -> tuple[str, str]:
        layer = config.layers[i]
        parent = str(config.layers[layer.parent].blob) if layer.parent >= 0 else ""
        return (str(layer.blob), parent)

    layer_order = sorted(range(len(config.layers)), key=layer_key)
    new_layer_index = {old: new for new, old in enumerate(layer_order)}
    layers = tuple(
        CacheLayer(
            config.layers[old].blob,
            new_layer_index[config.layers[old].parent] if config.layers[old].parent >= 0 else -1,
            config.layers[old].annotations,
        )
        for old in layer_order
    )
    record_order = sorted(range(len(config.records)), key=lambda j: str(config.records[j].digest))
    new_record_index = {old: new for new, old in enumerate(record_order)}
    records = []
    for old in record_order:
        record = config.records[old]
        results = tuple(
            sorted(
                (CacheResult(new_layer_index[r.layer], r.created_at, r.last_used) for r in record.results),
                key=lambda r: (str(layers[r.layer].blob), r.created_at or "", r.last_used or ""),
            )
        )
        inputs = tuple(
            tuple(
                sorted(
                    (CacheInput(new_record_index[i.link], i.selector) for i in group),
                    key=lambda i: (str(config.records[record_order[i.link]].digest), i.selector),
                )
            )
            for group in record.inputs
        )
        records.append(CacheRecord(record.digest, results, inputs))
    return CacheConfig(layers, tuple(records))

"""Cumulative BuildKit caches: :func:`merge` two cacheconfig.v0 graphs, :func:`prune` one by age and size.

Pure data over :class:`~lamina.oci.cacheconfig.CacheConfig` (no I/O). Indexes are positions, so
nothing is compared by index; everything is identified by what it stands for:

- a **layer entry** by its chain, the blob digests from the root layer up to it (the same blob on two
  parents stays two entries, as in BuildKit);
- a **record** by its digest *and* its inputs — each input group's (linked record, selector) pairs,
  the linked records identified the same way, recursively. BuildKit's record digest does not include
  the parent (``RUN make`` on two bases is one digest with two different inputs), so two records with
  one digest and different inputs are two records;
- a **result** by its record and its layer chain. The same result met twice keeps the earliest
  ``createdAt`` and the latest last-used time.

Output is canonical: layers, records, results and inputs sorted by what they stand for (a refinement of
:func:`~lamina.oci.cacheconfig.normalize`'s order, which leaves it unchanged), so the same content in
any order gives the same bytes and the same digest, and ``merge(a, b)`` equals ``merge(b, a)``.

**Last-used time** lives on each *result*, as ``lamina.lastUsedAt`` (RFC 3339) beside BuildKit's
``createdAt``: a result is what occupies bytes, so it is what retention weighs. One record can hold two
results (a step that is not reproducible, built by two writers), and the stale one must age out while
the fresh one stays, which a per-record time cannot express; pure link records carry no time at all,
they live as long as a kept record links to them. BuildKit decodes the config with Go's
``encoding/json``, which ignores unknown fields (and matches keys case-insensitively, hence the
``lamina.`` prefix that no Go field name can collide with), so a merged cache imports unchanged.
A result without ``lastUsedAt`` (written by BuildKit) ages from its ``createdAt``; without either it
counts as the oldest.

:func:`prune` drops, in this order: results whose chain names a blob of unknown size (not in the
manifest: the chain lost a layer), results unused for longer than ``max_age``, then results least
recently used first (among equally recent ones the longest chain first: its top layer is its own,
the shorter prefixes stay useful) until the distinct blobs still referenced weigh at most ``max_size``
bytes. A
record stays while it has a result or a kept record links to it; a layer entry stays while a kept
result's chain passes through it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .cacheconfig import CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult
from .descriptor import FormatError
from .digest import Digest

__all__ = [
    "Chain",
    "ResultKey",
    "blobs_size",
    "canonical",
    "format_time",
    "merge",
    "parse_time",
    "prune",
    "refresh",
    "result_keys",
    "touch",
]

Chain = tuple[Digest, ...]  # blob digests, root layer first
ResultKey = tuple[str, Chain]  # (record identity, layer chain)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, the format lamina writes for every cache time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as BuildKit (nanoseconds) or lamina writes it; ``None`` if absent or unreadable."""
    match = _TIME.match(text or "")
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    stamp = f"{whole}.{(fraction or '0')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}"
    try:
        return datetime.fromisoformat(stamp).astimezone(UTC)
    except ValueError:
        return None


@dataclass
class _Record:
    digest: Digest
    inputs: tuple[tuple[tuple[str, str], ...], ...]  # per group: sorted (linked record identity, selector)
    results: dict[Chain, tuple[str | None, str | None]] = field(default_factory=dict)  # chain -> (created, used)


@dataclass
class _Graph:
    layers: dict[Chain, Mapping[str, Any] | None] = field(default_factory=dict)
    records: dict[str, _Record] = field(default_factory=dict)


def _earliest(a: str | None, b: str | None) -> str | None:
    return _pick(a, b, max_wins=False)


def _latest(a: str | None, b: str | None) -> str | None:
    return _pick(a, b, max_wins=True)


def _pick(a: str | None, b: str | None, *, max_wins: bool) -> str | None:
    if a is None or b is None:
        return a if b is None else b
    ta, tb = parse_time(a), parse_time(b)
    if ta is None or tb is None or ta == tb:
        return min(a, b)  # unreadable or equal instants: any fixed choice keeps merge commutative
    return (a if ta > tb else b) if max_wins else (a if ta < tb else b)


def _merge_annotations(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not a or not b:
        return a or b or None
    out = dict(a)
    for key, value in b.items():
        if key in out and out[key] != value:
            out[key] = min(out[key], value, key=lambda v: json.dumps(v, sort_keys=True))
        else:
            out[key] = value
    return out


def _decompose(config: CacheConfig) -> _Graph:
    chains = [tuple(config.layer_chain(i)) for i in range(len(config.layers))]
    idents: dict[int, str] = {}
    visiting: set[int] = set()

    def ident(j: int) -> str:
        if j in idents:
            return idents[j]
        if j in visiting:
            raise FormatError(f"cacheconfig records[{j}]: inputs form a cycle")
        visiting.add(j)
        record = config.records[j]
        groups = [sorted([ident(i.link), i.selector] for i in group) for group in record.inputs]
        visiting.discard(j)
        doc = json.dumps([str(record.digest), groups], separators=(",", ":")).encode()
        idents[j] = f"{record.digest}@{hashlib.sha256(doc).hexdigest()[:32]}"
        return idents[j]

    graph = _Graph()
    for i, chain in enumerate(chains):
        graph.layers[chain] = _merge_annotations(graph.layers.get(chain), config.layers[i].annotations)
    for j, record in enumerate(config.records):
        key = ident(j)
        inputs = tuple(tuple(sorted((ident(i.link), i.selector) for i in group)) for group in record.inputs)
        entry = graph.records.setdefault(key, _Record(record.digest, inputs))
        for result in record.results:
            _add_result(entry, chains[result.layer], result.created_at, result.last_used)
    return graph


def _add_result(record: _Record, chain: Chain, created: str | None, used: str | None) -> None:
    old = record.results.get(chain)
    if old is not None:
        created, used = _earliest(old[0], created), _latest(old[1], used)
    record.results[chain] = (created, used)


def _compose(graph: _Graph) -> CacheConfig:
    chains: set[Chain] = set()
    for chain in graph.layers:
        chains.update(chain[: n + 1] for n in range(len(chain)))
    layer_order = sorted(chains, key=lambda c: [str(d) for d in reversed(c)])
    layer_index = {chain: i for i, chain in enumerate(layer_order)}
    layers = tuple(
        CacheLayer(chain[-1], layer_index[chain[:-1]] if len(chain) > 1 else -1, graph.layers.get(chain))
        for chain in layer_order
    )
    record_order = sorted(graph.records, key=lambda k: (str(graph.records[k].digest), k))
    record_index = {key: j for j, key in enumerate(record_order)}
    records = []
    for key in record_order:
        record = graph.records[key]
        results = sorted(
            (CacheResult(layer_index[chain], created, used) for chain, (created, used) in record.results.items()),
            key=lambda r: (str(layers[r.layer].blob), r.created_at or "", r.last_used or "",
                           [str(d) for d in reversed(layer_order[r.layer])]),
        )
        inputs = tuple(
            tuple(
                CacheInput(record_index[link], selector)
                for link, selector in sorted(group, key=lambda g: (str(graph.records[g[0]].digest), g[1], g[0]))
            )
            for group in record.inputs
        )
        records.append(CacheRecord(record.digest, tuple(results), inputs))
    return CacheConfig(layers, tuple(records))


def canonical(config: CacheConfig) -> CacheConfig:
    """``config`` with duplicates folded and everything in canonical order (same content, same bytes)."""
    return _compose(_decompose(config))


def merge(base: CacheConfig, ours: CacheConfig) -> CacheConfig:
    """The union of two caches' layers, records and results (commutative on content; see the module doc)."""
    graph = _decompose(base)
    other = _decompose(ours)
    for chain, notes in other.layers.items():
        graph.layers[chain] = _merge_annotations(graph.layers.get(chain), notes)
    for key, record in other.records.items():
        entry = graph.records.setdefault(key, _Record(record.digest, record.inputs))
        for chain, (created, used) in record.results.items():
            _add_result(entry, chain, created, used)
    return _compose(graph)


def touch(config: CacheConfig, now: datetime) -> CacheConfig:
    """Every result marked as used at ``now`` (what a build exports: the results it used or produced)."""
    stamp = format_time(now)
    records = tuple(
        CacheRecord(r.digest, tuple(CacheResult(x.layer, x.created_at, stamp) for x in r.results), r.inputs)
        for r in config.records
    )
    return CacheConfig(config.layers, records)


def refresh(ours: CacheConfig, base: CacheConfig, now: datetime, granularity: timedelta) -> CacheConfig:
    """``ours`` with every result marked used at ``now`` — unless ``base`` holds the same result marked
    used less than ``granularity`` ago: that time is kept, so an unchanged re-export within the
    granularity merges to the very same bytes (same digest, nothing to write)."""
    stamp = format_time(now)
    recent: dict[ResultKey, str] = {}
    for key, record in _decompose(base).records.items():
        for chain, (_, used) in record.results.items():
            moment = parse_time(used)
            if used is not None and moment is not None and now - granularity <= moment <= now:
                recent[(key, chain)] = used
    graph = _decompose(ours)
    for key, record in graph.records.items():
        for chain, (created, _) in record.results.items():
            record.results[chain] = (created, recent.get((key, chain), stamp))
    return _compose(graph)


def result_keys(config: CacheConfig) -> set[ResultKey]:
    """Every result as (record identity, chain): what "this cache still holds my records" compares."""
    graph = _decompose(config)
    return {(key, chain) for key, record in graph.records.items() for chain in record.results}


def blobs_size(config: CacheConfig, layer_sizes: Mapping[Digest, int]) -> int:
    """Bytes of the distinct blobs the results of ``config`` reference (unknown blobs count 0)."""
    blobs = {d for record in _decompose(config).records.values() for chain in record.results for d in chain}
    return sum(layer_sizes.get(d, 0) for d in blobs)


def _last_used(created: str | None, used: str | None) -> datetime:
    return parse_time(used) or parse_time(created) or _EPOCH


def prune(
    config: CacheConfig,
    *,
    now: datetime,
    max_age: timedelta | None = None,
    max_size: int | None = None,
    layer_sizes: Mapping[Digest, int],
) -> CacheConfig:
    """``config`` without what retention drops (see the module docstring); ``layer_sizes``: blob -> bytes."""
    graph = _decompose(config)
    alive: dict[ResultKey, datetime] = {}
    for key, record in graph.records.items():
        for chain, (created, used) in record.results.items():
            if any(blob not in layer_sizes for blob in chain):
                continue
            moment = _last_used(created, used)
            if max_age is not None and moment < now - max_age:
                continue
            alive[(key, chain)] = moment
    if max_size is not None:
        refs: dict[Digest, int] = {}
        for _, chain in alive:
            for blob in set(chain):
                refs[blob] = refs.get(blob, 0) + 1
        total = sum(layer_sizes[blob] for blob in refs)
        for result in sorted(alive, key=lambda r: (alive[r], -len(r[1]), r[0], [str(d) for d in r[1]])):
            if total <= max_size:
                break
            del alive[result]
            for blob in set(result[1]):
                refs[blob] -= 1
                if refs[blob] == 0:
                    total -= layer_sizes[blob]
    return _compose(_restrict(graph, alive))


def _restrict(graph: _Graph, alive: Iterable[ResultKey]) -> _Graph:
    kept = _Graph()
    stack: list[str] = []
    for key, chain in alive:
        record = graph.records[key]
        entry = kept.records.setdefault(key, _Record(record.digest, record.inputs))
        entry.results[chain] = record.results[chain]
        kept.layers[chain] = graph.layers.get(chain)
        stack.append(key)
    while stack:  # the records a kept record links to stay, as pure links if their results went
        for group in graph.records[stack.pop()].inputs:
            for link, _ in group:
                if link not in kept.records:
                    kept.records[link] = _Record(graph.records[link].digest, graph.records[link].inputs)
                    stack.append(link)
    for chain in list(kept.layers):
        for n in range(1, len(chain)):
            kept.layers.setdefault(chain[:n], graph.layers.get(chain[:n]))
    return kept

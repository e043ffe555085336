"""Cumulative caches as pure data: merge (union, commutative, order-independent) and prune (age, size, LRU).

BuildKit's own configs (the reference captures in tests/data/buildkit-cache) and seeded
random build graphs; every invariant is checked on the dumped bytes parsed back, so no index dangles.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from helpers.reference import REFERENCE_DIR
from lamina.oci import CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult, digest_of, normalize
from lamina.oci.cacheconfig import LAST_USED_FIELD
from lamina.oci.cachemerge import (
    blobs_size,
    canonical,
    format_time,
    merge,
    parse_time,
    prune,
    refresh,
    result_keys,
    touch,
)

DATA = REFERENCE_DIR
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def load(name: str) -> CacheConfig:
    return CacheConfig.parse((DATA / name).read_bytes().strip())


def d(text: str) -> object:
    return digest_of(text.encode())


def shuffled(config: CacheConfig, seed: int) -> CacheConfig:
    rng = random.Random(seed)
    lorder, rorder = list(range(len(config.layers))), list(range(len(config.records)))
    rng.shuffle(lorder)
    rng.shuffle(rorder)
    lnew = {old: new for new, old in enumerate(lorder)}
    rnew = {old: new for new, old in enumerate(rorder)}
    layers = tuple(
        CacheLayer(config.layers[o].blob, lnew[config.layers[o].parent] if config.layers[o].parent >= 0 else -1)
        for o in lorder
    )
    records = tuple(
        CacheRecord(
            config.records[o].digest,
            tuple(CacheResult(lnew[r.layer], r.created_at, r.last_used) for r in reversed(config.records[o].results)),
            tuple(tuple(CacheInput(rnew[i.link], i.selector) for i in reversed(g)) for g in config.records[o].inputs),
        )
        for o in rorder
    )
    return CacheConfig(layers, records)


def build_graph(seed: int, *, prefix: str = "", steps: int = 12) -> tuple[CacheConfig, dict[object, int]]:
    """A random lamina-like graph: stages of chained steps on shared bases, some pure links, random times."""
    rng = random.Random(seed)
    layers: list[CacheLayer] = []
    records: list[CacheRecord] = []
    sizes: dict[object, int] = {}
    chain_top: dict[int, int] = {}  # record -> layer entry of its result
    for n in range(steps):
        parent = rng.choice([None, *range(len(records))]) if records else None
        key = d(f"{prefix}step{seed}-{n}" if rng.random() < 0.8 else f"shared-{n % 3}")
        inputs: tuple[tuple[CacheInput, ...], ...] = ((CacheInput(parent),),) if parent is not None else ()
        if rng.random() < 0.2 or (parent is not None and parent not in chain_top):
            records.append(CacheRecord(key, (), inputs))  # a pure link
            continue
        blob = d(f"{prefix}blob{seed}-{n}" if rng.random() < 0.9 else f"shared-blob-{n % 4}")
        sizes[blob] = rng.randint(1, 1000)
        layers.append(CacheLayer(blob, chain_top[parent] if parent is not None else -1))
        chain_top[len(records)] = len(layers) - 1
        created = format_time(NOW - timedelta(hours=rng.randint(0, 300)))
        used = format_time(NOW - timedelta(hours=rng.randint(0, 300))) if rng.random() < 0.7 else None
        records.append(CacheRecord(key, (CacheResult(len(layers) - 1, created, used),), inputs))
    return CacheConfig(tuple(layers), tuple(records)), sizes


def roundtrip(config: CacheConfig) -> CacheConfig:
    again = CacheConfig.parse(config.to_bytes())
    assert again.to_bytes() == config.to_bytes()
    return again


@pytest.mark.parametrize(
    "name", ["cacheconfig.raw.json", "multistage-max.cacheconfig.json", "multistage-min.cacheconfig.json"]
)
def test_buildkit_configs_are_already_canonical(name: str) -> None:
    config = load(name)
    assert canonical(config).to_bytes() == normalize(config).to_bytes()
    assert merge(config, config).to_bytes() == normalize(config).to_bytes()


def test_merge_of_two_buildkit_caches_holds_both_and_ignores_order() -> None:
    a, b = load("multistage-max.cacheconfig.json"), load("cacheconfig.raw.json")
    merged = roundtrip(merge(a, b))
    assert result_keys(merged) == result_keys(a) | result_keys(b)
    assert normalize(merged) == merged
    for seed in range(5):
        assert merge(shuffled(b, seed), shuffled(a, seed + 1)).to_bytes() == merged.to_bytes()


def test_min_is_contained_in_max_of_the_same_build() -> None:
    small, big = load("multistage-min.cacheconfig.json"), load("multistage-max.cacheconfig.json")
    assert merge(small, big).to_bytes() == merge(big, small).to_bytes()
    assert result_keys(small) <= result_keys(merge(small, big))


@pytest.mark.parametrize("seed", range(40))
def test_merge_properties_on_random_graphs(seed: int) -> None:
    a, _ = build_graph(seed, prefix="a")
    b, _ = build_graph(seed + 1000, prefix="b")
    merged = roundtrip(merge(a, b))
    assert merged.to_bytes() == merge(b, a).to_bytes()
    assert merged.to_bytes() == merge(shuffled(a, seed), shuffled(b, seed)).to_bytes()
    assert result_keys(merged) == result_keys(a) | result_keys(b)
    assert merge(merged, a).to_bytes() == merged.to_bytes()  # idempotent
    assert normalize(merged) == merged
    c, _ = build_graph(seed + 2000, prefix="c")
    assert merge(merge(a, b), c).to_bytes() == merge(a, merge(b, c)).to_bytes()  # associative


def test_same_digest_on_two_parents_stays_two_records() -> None:
    base1, base2, step = d("base1"), d("base2"), d("RUN make")
    layers = (CacheLayer(d("L1")), CacheLayer(d("L2")), CacheLayer(d("L3"), 0), CacheLayer(d("L4"), 1))
    one = CacheConfig(layers, (
        CacheRecord(base1, (CacheResult(0),)), CacheRecord(step, (CacheResult(2),), ((CacheInput(0),),)),
    ))
    two = CacheConfig(layers, (
        CacheRecord(base2, (CacheResult(1),)), CacheRecord(step, (CacheResult(3),), ((CacheInput(0),),)),
    ))
    merged = roundtrip(merge(one, two))
    assert [r.digest for r in merged.records].count(step) == 2
    assert len(result_keys(merged)) == 4


def test_same_result_keeps_earliest_created_and_latest_used() -> None:
    layers = (CacheLayer(d("L1")),)
    old = CacheConfig(layers, (CacheRecord(d("k"), (CacheResult(0, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),)),))
    later = CacheResult(0, "2026-01-05T00:00:00.5Z", "2026-03-01T00:00:00Z")
    new = CacheConfig(layers, (CacheRecord(d("k"), (later,)),))
    (record,) = merge(old, new).records
    assert record.results == (CacheResult(0, "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"),)


def test_two_results_under_one_record_age_separately() -> None:
    layers = (CacheLayer(d("L1")), CacheLayer(d("L2")))
    stale = CacheConfig(layers, (CacheRecord(d("k"), (CacheResult(0, None, format_time(NOW - timedelta(days=9))),)),))
    fresh = CacheConfig(layers, (CacheRecord(d("k"), (CacheResult(1, None, format_time(NOW)),)),))
    merged = merge(stale, fresh)
    assert len(merged.records[0].results) == 2
    kept = prune(merged, now=NOW, max_age=timedelta(days=7), layer_sizes={d("L1"): 1, d("L2"): 1})
    assert [layer.blob for layer in kept.layers] == [d("L2")]


def test_last_used_round_trips_beside_created_at() -> None:
    config = touch(load("multistage-min.cacheconfig.json"), NOW)
    data = config.to_bytes()
    stamp = f'"{LAST_USED_FIELD}":"{format_time(NOW)}"'.encode()
    assert data.count(stamp) == sum(len(r.results) for r in config.records) > 0
    assert CacheConfig.parse(data) == config
    assert parse_time("2026-11-28T14:38:36.548543237Z") == datetime(2026, 11, 28, 14, 38, 36, 548543, tzinfo=UTC)
    assert parse_time("2026-11-28T15:38:36+01:00") == datetime(2026, 11, 28, 14, 38, 36, tzinfo=UTC)
    assert parse_time("yesterday") is None


def _check_pruned(pruned: CacheConfig, original: CacheConfig, sizes: dict[object, int]) -> None:
    pruned = roundtrip(pruned)
    assert result_keys(pruned) <= result_keys(original)
    used = {blob for r in pruned.records for x in r.results for blob in pruned.layer_chain(x.layer)}
    assert {layer.blob for layer in pruned.layers} == used  # a layer stays only while a kept result uses it
    with_results = {j for j, r in enumerate(pruned.records) if r.results}
    linked = {i.link for r in pruned.records for g in r.inputs for i in g}
    reachable, stack = set(), list(with_results)
    while stack:
        j = stack.pop()
        if j not in reachable:
            reachable.add(j)
            stack.extend(i.link for g in pruned.records[j].inputs for i in g)
    assert reachable == set(range(len(pruned.records)))  # no orphan link records
    assert linked <= reachable


@pytest.mark.parametrize("seed", range(40))
def test_prune_invariants_on_random_graphs(seed: int) -> None:
    a, sizes_a = build_graph(seed, prefix="a", steps=20)
    b, sizes_b = build_graph(seed + 500, prefix="b", steps=20)
    sizes = {**sizes_a, **sizes_b}
    merged = merge(a, b)
    total = blobs_size(merged, sizes)
    limit = random.Random(seed).randint(0, total)
    pruned = prune(merged, now=NOW, max_size=limit, layer_sizes=sizes)
    _check_pruned(pruned, merged, sizes)
    assert blobs_size(pruned, sizes) <= limit
    unlimited = prune(merged, now=NOW, layer_sizes=sizes)  # drops only link records nothing links to
    assert result_keys(unlimited) == result_keys(merged)
    assert prune(unlimited, now=NOW, layer_sizes=sizes).to_bytes() == unlimited.to_bytes()
    assert prune(pruned, now=NOW, max_size=limit, layer_sizes=sizes).to_bytes() == pruned.to_bytes()
    aged = prune(merged, now=NOW, max_age=timedelta(hours=150), layer_sizes=sizes)
    _check_pruned(aged, merged, sizes)
    for record in aged.records:
        for result in record.results:
            moment = parse_time(result.last_used) or parse_time(result.created_at)
            assert moment is not None and moment >= NOW - timedelta(hours=150)
    assert prune(merged, now=NOW, max_size=0, layer_sizes=sizes).records == ()


def test_prune_drops_least_recently_used_first() -> None:
    layers = tuple(CacheLayer(d(f"L{i}")) for i in range(4))
    records = tuple(
        CacheRecord(d(f"k{i}"), (CacheResult(i, None, format_time(NOW - timedelta(hours=10 * i))),)) for i in range(4)
    )
    sizes = {d(f"L{i}"): 100 for i in range(4)}
    pruned = prune(CacheConfig(layers, records), now=NOW, max_size=250, layer_sizes=sizes)
    assert sorted(r.digest for r in pruned.records) == sorted([d("k0"), d("k1")])
    assert blobs_size(pruned, sizes) == 200


def test_prune_keeps_parent_links_and_shared_layers() -> None:
    # base (L0) <- child (L0+L1): the base result is older, so it goes first; L0 stays (the child's chain)
    layers = (CacheLayer(d("L0")), CacheLayer(d("L1"), 0))
    records = (
        CacheRecord(d("base"), (CacheResult(0, None, format_time(NOW - timedelta(days=3))),)),
        CacheRecord(d("child"), (CacheResult(1, None, format_time(NOW)),), ((CacheInput(0),),)),
    )
    sizes = {d("L0"): 10, d("L1"): 10}
    pruned = roundtrip(prune(CacheConfig(layers, records), now=NOW, max_age=timedelta(days=1), layer_sizes=sizes))
    by_digest = {r.digest: r for r in pruned.records}
    assert by_digest[d("base")].results == ()  # kept as a link: the child's key graph starts there
    assert len(pruned.layers) == 2 and blobs_size(pruned, sizes) == 20


def test_a_chain_that_lost_a_layer_goes_with_it() -> None:
    layers = (CacheLayer(d("L0")), CacheLayer(d("L1"), 0), CacheLayer(d("L2")))
    records = (
        CacheRecord(d("a"), (CacheResult(1),)),
        CacheRecord(d("b"), (CacheResult(2),)),
    )
    pruned = prune(CacheConfig(layers, records), now=NOW, layer_sizes={d("L1"): 5, d("L2"): 5})
    assert [r.digest for r in pruned.records] == [d("b")]
    assert [layer.blob for layer in pruned.layers] == [d("L2")]


def test_refresh_keeps_a_recent_time_so_an_unchanged_re_export_is_byte_identical() -> None:
    ours = load("multistage-max.cacheconfig.json")
    first = merge(CacheConfig((), ()), refresh(ours, CacheConfig((), ()), NOW, timedelta(hours=1)))
    assert {x.last_used for r in first.records for x in r.results} == {format_time(NOW)}
    later = NOW + timedelta(minutes=30)
    again = merge(first, refresh(ours, first, later, timedelta(hours=1)))
    assert again.to_bytes() == first.to_bytes()
    much_later = NOW + timedelta(hours=2)
    moved = merge(first, refresh(ours, first, much_later, timedelta(hours=1)))
    assert {x.last_used for r in moved.records for x in r.results} == {format_time(much_later)}

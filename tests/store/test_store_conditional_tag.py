"""Conditional tag updates in the MetadataStore (every implementation, conftest.METADATA_STORES): the
condition is evaluated in the transaction that moves the tag, so racing writers conditioned on one digest
leave exactly one winner, also across processes."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest
from test_store_metadata import blob, image, record

from lamina.oci import Digest
from lamina.store import MetadataStore, TagCondition, TagImmutable, TagPreconditionFailed

MetadataFactory = Callable[[Path], MetadataStore]
FORK = multiprocessing.get_context("fork")
A, B, C = (Digest("sha256", ch * 64) for ch in "abc")


@pytest.mark.parametrize(
    ("condition", "current", "holds"),
    [
        (TagCondition(match=frozenset({A})), A, True),
        (TagCondition(match=frozenset({A})), B, False),
        (TagCondition(match=frozenset({A})), None, False),
        (TagCondition(match=frozenset({A, B})), B, True),
        (TagCondition(match="*"), C, True),
        (TagCondition(match="*"), None, False),
        (TagCondition(none_match="*"), None, True),
        (TagCondition(none_match="*"), A, False),
        (TagCondition(none_match=frozenset({A})), A, False),
        (TagCondition(none_match=frozenset({A})), B, True),
        (TagCondition(none_match=frozenset({A})), None, True),
        (TagCondition(match=frozenset({A}), none_match=frozenset({A})), A, False),
    ],
)
def test_condition_holds(condition: TagCondition, current: Digest | None, holds: bool) -> None:
    assert condition.holds(current) is holds


def _candidate(store: MetadataStore, name: str):  # type: ignore[no-untyped-def]
    refs = [blob(store, "app", f"layer {name}".encode())]
    return record("app", json.dumps({"image": name}).encode()), refs


def test_if_match_moves_only_from_the_expected_digest(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    base = image(store, "app", "base", tag="cache")
    first, refs = _candidate(store, "first")
    store.put_manifest(first, refs, "cache", condition=TagCondition(match=frozenset({base.digest})))
    second, refs2 = _candidate(store, "second")
    with pytest.raises(TagPreconditionFailed) as failed:
        store.put_manifest(second, refs2, "cache", condition=TagCondition(match=frozenset({base.digest})))
    assert failed.value.current == first.digest and "cache" in str(failed.value)
    got = store.get_manifest("app", "cache")
    assert got is not None and got.digest == first.digest
    # the manifest of the refused update was not stored either (one transaction)
    assert store.get_manifest("app", str(second.digest)) is None
    # a retry of the winning update (its answer lost) finds the change made: no error
    store.put_manifest(first, refs, "cache", condition=TagCondition(match=frozenset({base.digest})))


def test_if_none_match_star_creates_once(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    first, refs = _candidate(store, "first")
    store.put_manifest(first, refs, "new", condition=TagCondition(none_match="*"))
    second, refs2 = _candidate(store, "second")
    with pytest.raises(TagPreconditionFailed) as failed:
        store.put_manifest(second, refs2, "new", condition=TagCondition(none_match="*"))
    assert failed.value.current == first.digest
    with pytest.raises(TagPreconditionFailed) as missing:
        store.put_manifest(second, refs2, "absent", condition=TagCondition(match="*"))
    assert missing.value.current is None
    assert store.list_tags("app", None, None) == ["new"]


def test_a_condition_that_holds_still_meets_an_immutable_tag(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    base = image(store, "app", "base", tag="v1")
    other, refs = _candidate(store, "other")
    with pytest.raises(TagImmutable):
        store.put_manifest(other, refs, "v1", immutable=True, condition=TagCondition(match=frozenset({base.digest})))


def _race(factory: MetadataFactory, root: Path, n: int, base: str, barrier: object, results: object) -> None:
    store = factory(root)
    rec, refs = _candidate(store, f"writer {n}")
    barrier.wait()  # type: ignore[attr-defined]
    try:
        store.put_manifest(rec, refs, "cache", condition=TagCondition(match=frozenset({Digest(*base.split(":"))})))
        results.put((n, str(rec.digest)))  # type: ignore[attr-defined]
    except TagPreconditionFailed:
        results.put((n, ""))  # type: ignore[attr-defined]


def test_racing_processes_from_one_digest_leave_one_winner(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    base = image(store, "app", "base", tag="cache")
    barrier, results = FORK.Barrier(6), FORK.Queue()
    workers = [
        FORK.Process(target=_race, args=(metadata_factory, tmp_path, n, str(base.digest), barrier, results))
        for n in range(6)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 6
    winners = [digest for _, digest in outcomes if digest]
    assert len(winners) == 1
    got = store.get_manifest("app", "cache")
    assert got is not None and str(got.digest) == winners[0]

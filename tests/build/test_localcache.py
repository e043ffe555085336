"""The content store and the local cache index: atomic, verified, safe with two writers and after a crash."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from lamina.build.cache import CachedResult, LayerRef, LocalCache
from lamina.build.contentstore import ContentError, ContentStore
from lamina.oci import Descriptor, digest_of
from lamina.oci import mediatypes as mt


def _layer(store: ContentStore, data: bytes, source: str | None = None) -> LayerRef:
    digest = store.write_bytes(data) if source is None else digest_of(data)
    return LayerRef(Descriptor(mt.OCI_LAYER_GZIP, digest, len(data)), digest_of(b"diff" + data), "2024-01-01T00:00:00Z",
                    source)


def test_write_is_verified_and_read_only(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write_bytes(b"hello")
    assert store.read(digest) == b"hello"
    assert store.path(digest).stat().st_mode & 0o777 == 0o444
    with pytest.raises(ContentError, match="digest mismatch"):
        store.write_bytes(b"other", expected=digest)
    assert list((tmp_path / "ingest").iterdir()) == []


def test_uncommitted_write_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer() as blob:
        blob.write(b"half")
        raise RuntimeError("killed")
    assert list((tmp_path / "ingest").iterdir()) == []
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_corrupt_blob_is_detected(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write_bytes(b"good")
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"evil")
    with pytest.raises(ContentError, match="corrupt"):
        store.read(digest)


def test_record_round_trip_and_lazy_layers(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    cache = LocalCache(tmp_path / "cache.db", store)
    base = _layer(store, b"base", source="localhost:5000/base")
    top = _layer(store, b"top")
    key = digest_of(b"key")
    cache.add(key, {"op": "run", "argv": ["a"]}, CachedResult(key, (base, top), "2024-01-01T00:00:00Z"), slot="p")
    hit = cache.lookup(key)
    assert hit is not None and hit.layers == (base, top) and hit.origin == "local"
    assert hit.layers[0].source == "localhost:5000/base"
    assert cache.lookup(digest_of(b"other")) is None
    assert cache.explain("p", {"op": "run", "argv": ["b"]}) == "argv changed"
    assert cache.explain("nowhere", {}) is None


def test_record_whose_blob_vanished_is_a_miss(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    cache = LocalCache(tmp_path / "cache.db", store)
    top = _layer(store, b"top")
    key = digest_of(b"key")
    cache.add(key, {}, CachedResult(key, (top,), "t"), slot="p")
    store.path(top.descriptor.digest).unlink()
    assert cache.lookup(key) is None
    assert cache.explain("p", {}) == "the cached result's layer blobs are missing from the local store"


def test_refuses_to_record_missing_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    cache = LocalCache(tmp_path / "cache.db", store)
    ghost = LayerRef(Descriptor(mt.OCI_LAYER_GZIP, digest_of(b"x"), 1), digest_of(b"y"))
    with pytest.raises(ValueError, match="not in the content store"):
        cache.add(digest_of(b"k"), {}, CachedResult(digest_of(b"k"), (ghost,), "t"), slot="p")
    assert cache.count() == 0


def _writer(root: str, n: int) -> None:
    store = ContentStore(Path(root) / "content")
    cache = LocalCache(Path(root) / "cache.db", store)
    for i in range(40):
        layer = _layer(store, f"layer-{i}".encode())
        key = digest_of(f"key-{i}".encode())
        cache.add(key, {"i": i, "writer": n}, CachedResult(key, (layer,), "t"), slot="s")
    cache.close()


def test_two_builds_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ContentStore(tmp_path / "content")
    cache = LocalCache(tmp_path / "cache.db", store)
    assert cache.count() == 40
    assert all(cache.lookup(digest_of(f"key-{i}".encode())) is not None for i in range(40))


def _open_when_released(path: str, barrier: Any, errors: Any) -> None:
    from lamina.build.cache.local import _open_index

    barrier.wait()
    try:
        _open_index(Path(path)).close()
    except sqlite3.OperationalError as exc:
        errors.put(str(exc))


def test_builds_starting_at_once_all_open_a_new_index(tmp_path: Path) -> None:
    """Processes creating one new index at the same instant: SQLite refuses the lock escalation of all
    but one with an immediate "database is locked" (no busy wait); the open retries, so none fails.
    (Without the retry about 8% of the opens failed here: 25 rounds of 4 make a miss unlikely.)"""
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_ in range(25):
        path = tmp_path / f"index-{round_}.db"
        barrier = context.Barrier(4)
        procs = [context.Process(target=_open_when_released, args=(str(path), barrier, errors)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    assert errors.empty(), errors.get()


def test_explain_compares_with_the_same_instruction_on_the_parent(tmp_path: Path) -> None:
    """A stage's RUN and another stage's COPY --from both sit on the base image: the COPY's miss is never
    explained by the RUN ("instruction changed (run -> copy)"), but by the COPY recorded there, or not
    at all, so that the next explainer (a remote cache's fingerprints) is asked."""
    store = ContentStore(tmp_path / "content")
    cache = LocalCache(tmp_path / "cache.db", store)
    layer = _layer(store, b"l")
    run, copy = digest_of(b"run"), digest_of(b"copy")
    cache.add(run, {"op": "run", "argv": ["apt-get"]}, CachedResult(run, (layer,), "t"), slot="base")
    copy_inputs = {"op": "copy", "from": "stage-files", "content": "old", "dest": "/usr/local/bin/x"}  # content key
    assert cache.explain("base", {**copy_inputs, "content": "new"}) is None
    cache.add(copy, copy_inputs, CachedResult(copy, (layer,), "t"), slot="base")
    cache.add(run, {"op": "run", "argv": ["apt-get"]}, CachedResult(run, (layer,), "t"), slot="base")  # used last
    assert cache.explain("base", {**copy_inputs, "content": "new"}) == "copied files changed in the COPY --from source"

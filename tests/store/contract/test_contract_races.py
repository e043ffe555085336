"""The transactional guarantees under real concurrency, on every metadata backend: worker processes
race garbage collection, unlinks, session limits (and, on PostgreSQL, schema migrations), and what must
never happen is checked afterwards. On SQLite one writer at a time gives them; on PostgreSQL the GC gate,
the per-name advisory locks and the row locks of lamina.store.postgres do — these tests fail without them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from pathlib import Path

import pytest
from contract_helpers import MetadataFactory, push_blob, push_image, record, storage_on
from store_helpers import blob_digest

from lamina.oci import parse_digest
from lamina.store import (
    BlobReferenced,
    ManifestReference,
    MissingReference,
    StoreError,
    TagCondition,
    TagImmutable,
    TagPreconditionFailed,
    UploadLimitReached,
    UploadLimits,
    UploadSession,
)
from lamina.store.sweep import FilesystemSweepBlobs, sweep

FORK = multiprocessing.get_context("fork")
SECONDS = 2.5


def _pusher(factory: MetadataFactory, root: Path, worker: int, barrier: object, failures: object) -> None:
    storage = storage_on(root, factory(root))
    barrier.wait()  # type: ignore[attr-defined]
    deadline, n = time.monotonic() + SECONDS, 0
    while time.monotonic() < deadline:
        n += 1
        try:
            push_image(storage, f"race/{worker}", f"{worker}-{n}", f"t{n}")
        except MissingReference:  # GC took a link between the blob push and the manifest: push again
            failures.value += 1  # type: ignore[attr-defined]


def _collector(factory: MetadataFactory, root: Path, barrier: object, rounds: object) -> None:
    storage = storage_on(root, factory(root))
    barrier.wait()  # type: ignore[attr-defined]
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        # grace 0 and a clock an hour ahead: every link no manifest uses yet is stale, every file old
        sweep(storage.metadata, FilesystemSweepBlobs(storage.paths), list(storage.blobs.iter_digests()),
              grace_seconds=0, now=time.time() + 3600)
        rounds.value += 1  # type: ignore[attr-defined]
        time.sleep(0.01)  # let pushes through between rounds, as a scheduled GC would


def test_gc_racing_pushes_never_leaves_a_manifest_without_its_blobs(
    tmp_path: Path, metadata_factory: MetadataFactory
) -> None:
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    barrier, failures, rounds = FORK.Barrier(3), FORK.Value("i", 0), FORK.Value("i", 0)
    workers = [FORK.Process(target=_pusher, args=(metadata_factory, tmp_path, n, barrier, failures)) for n in (1, 2)]
    workers.append(FORK.Process(target=_collector, args=(metadata_factory, tmp_path, barrier, rounds)))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    manifests = [info for repo in ("race/1", "race/2") for info in storage.metadata.manifest_infos(repo)]
    assert manifests and rounds.value > 0, (failures.value, rounds.value)
    for info in manifests:
        for ref in info.references:
            digest = parse_digest(ref.digest)
            assert storage.metadata.linked_blob_size(info.repository, digest) == ref.size, (info.digest, ref)
            assert storage.blobs.size(digest) == ref.size, (info.digest, ref)


REPOS = 60


def _putter(factory: MetadataFactory, root: Path, barrier: object) -> None:
    meta = factory(root)
    layer, config = blob_digest(b"layer same"), blob_digest(b"config same")
    refs = [ManifestReference(config, len(b"config same")), ManifestReference(layer, len(b"layer same"))]
    barrier.wait()  # type: ignore[attr-defined]
    for n in range(REPOS):
        with contextlib.suppress(MissingReference):  # the unlink came first: refused, as it must be
            meta.put_manifest(record(f"race/{n}", b'{"same": 1}'), refs, "v1")


def _unlinker(factory: MetadataFactory, root: Path, barrier: object) -> None:
    meta = factory(root)
    layer = blob_digest(b"layer same")
    barrier.wait()  # type: ignore[attr-defined]
    for n in range(REPOS):
        with contextlib.suppress(BlobReferenced):  # the manifest came first: refused, as it must be
            meta.unlink_blob(f"race/{n}", layer)


def test_unlink_racing_a_manifest_put_never_strands_it(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    """In each of 60 repositories one process PUTs a manifest using a linked layer while another unlinks
    that layer: either may win, never both (a manifest whose layer link is gone)."""
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    for n in range(REPOS):
        for data in (b"layer same", b"config same"):
            push_blob(storage, f"race/{n}", data)
    barrier = FORK.Barrier(2)
    workers = [FORK.Process(target=_putter, args=(metadata_factory, tmp_path, barrier)),
               FORK.Process(target=_unlinker, args=(metadata_factory, tmp_path, barrier))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    layer = blob_digest(b"layer same")
    for n in range(REPOS):
        stored = storage.metadata.get_manifest(f"race/{n}", "v1") is not None
        linked = storage.metadata.linked_blob_size(f"race/{n}", layer) is not None
        assert stored <= linked, f"race/{n}: a manifest without its layer's link"


def _open_session(factory: MetadataFactory, root: Path, n: int, barrier: object, opened: object) -> None:
    meta = factory(root)
    barrier.wait()  # type: ignore[attr-defined]
    session = UploadSession(f"s{n}", "app", 0, time.time(), time.time(), user="alice" if n % 2 else None)
    try:
        meta.create_upload(session, UploadLimits(per_repository=5, per_user=2, live_since=0.0))
        opened.value += 1  # type: ignore[attr-defined]
    except UploadLimitReached:
        pass


def test_session_limits_hold_under_concurrent_creation(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    meta = metadata_factory(tmp_path)
    count = 10
    barrier, opened = FORK.Barrier(count), FORK.Value("i", 0)
    workers = [FORK.Process(target=_open_session, args=(metadata_factory, tmp_path, n, barrier, opened))
               for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * count
    sessions = [meta.get_upload(f"s{n}") for n in range(count)]
    alice = [s for s in sessions if s is not None and s.user == "alice"]
    # 5 anonymous and 5 of alice's race for 5 places, alice for 2 at most: whoever comes first
    assert opened.value == sum(s is not None for s in sessions) == 5
    assert len(alice) <= 2


def _migrate(url: str, barrier: object) -> None:
    from lamina.store.postgres import PostgresMetadataStore

    store = PostgresMetadataStore(url)
    barrier.wait()  # type: ignore[attr-defined]
    store.create_schema()
    store.close()


def test_postgres_replicas_migrating_at_once(request: pytest.FixtureRequest) -> None:
    """Four processes start on a fresh database at once: each migration is applied exactly once; a database
    migrated by a newer lamina is refused with one clear line."""
    import psycopg

    from helpers.postgres import scratch_database
    from lamina.store.migrations import latest_version
    from lamina.store.postgres import PostgresMetadataStore

    server = request.getfixturevalue("postgres_server")
    with scratch_database(server.url, migrated=False, drop=False) as url:
        barrier = FORK.Barrier(4)
        workers = [FORK.Process(target=_migrate, args=(url, barrier)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0] * 4
        with psycopg.connect(url, autocommit=True) as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]
            assert versions == list(range(1, latest_version() + 1))
            conn.execute("INSERT INTO schema_version VALUES (%s, 'from the future', 0)", (latest_version() + 1,))
        store = PostgresMetadataStore(url)
        with pytest.raises(StoreError, match=r"schema version \d+, newer than this lamina .*upgrade lamina"):
            store.create_schema()
        store.close()


def _create_tag(factory: MetadataFactory, root: Path, n: int, how: str, barrier: object, results: object) -> None:
    storage = storage_on(root, factory(root))
    refs = [push_blob(storage, "app", f"layer {n}".encode())]
    rec = record("app", f'{{"writer": {n}}}'.encode())
    barrier.wait()  # type: ignore[attr-defined]
    try:
        if how == "if-none-match":
            storage.metadata.put_manifest(rec, refs, "release", condition=TagCondition(none_match="*"))
        else:
            storage.metadata.put_manifest(rec, refs, "release", immutable=True)
        results.put(str(rec.digest))  # type: ignore[attr-defined]
    except (TagPreconditionFailed, TagImmutable):
        results.put("")  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["if-none-match", "immutable"])
def test_writers_racing_to_create_one_tag_leave_one_winner(
    tmp_path: Path, metadata_factory: MetadataFactory, how: str
) -> None:
    """A tag that does not exist yet has no row to lock: the per-tag lock is what makes exactly one of six
    ``If-None-Match: *`` (or immutable) creations win."""
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    barrier, results = FORK.Barrier(6), FORK.Queue()
    workers = [FORK.Process(target=_create_tag, args=(metadata_factory, tmp_path, n, how, barrier, results))
               for n in range(6)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 6
    winners = [digest for digest in outcomes if digest]
    assert len(winners) == 1, outcomes
    got = storage.metadata.get_manifest("app", "release")
    assert got is not None and str(got.digest) == winners[0]

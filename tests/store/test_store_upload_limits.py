"""Upload-session accounting in the metadata store (every backend, conftest.METADATA_STORES): the limits
checked in the insert's transaction, what counts (live sessions, per repository, per named user); and, on
SQLite, the schema 1 -> 2 migration that adds ``upload_sessions.user`` to a database an older lamina wrote."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.store import MetadataStore, UploadLimitReached, UploadLimits, UploadSession, open_storage

MetadataFactory = Callable[[Path], MetadataStore]


def test_limits_count_live_sessions_per_repository_and_per_user(
    tmp_path: Path, metadata_factory: MetadataFactory
) -> None:
    store = metadata_factory(tmp_path)
    limits = UploadLimits(per_repository=3, per_user=2, live_since=100.0)
    store.create_upload(UploadSession("old", "app", 0, 10.0, 50.0, "ci"), limits)  # idle since 50: not counted
    store.create_upload(UploadSession("a1", "app", 0, 200.0, 200.0, "ci"), limits)
    store.create_upload(UploadSession("a2", "app", 0, 210.0, 210.0, "ci"), limits)
    with pytest.raises(UploadLimitReached) as caught:
        store.create_upload(UploadSession("a3", "other", 0, 220.0, 220.0, "ci"), limits)
    assert (caught.value.scope, caught.value.owner, caught.value.limit, caught.value.oldest_update) == (
        "user", "ci", 2, 200.0
    )
    assert "user ci already has 2 open upload sessions" in str(caught.value)
    store.create_upload(UploadSession("anon", "app", 0, 230.0, 230.0, None), limits)  # no user: repository only
    with pytest.raises(UploadLimitReached) as caught:
        store.create_upload(UploadSession("b1", "app", 0, 240.0, 240.0, "dev"), limits)
    assert (caught.value.scope, caught.value.owner, caught.value.limit) == ("repository", "app", 3)
    assert store.get_upload("a3") is None and store.get_upload("b1") is None
    assert store.get_upload("a1") == UploadSession("a1", "app", 0, 200.0, 200.0, "ci")
    store.delete_upload("a1")
    store.create_upload(UploadSession("b1", "app", 0, 250.0, 250.0, "dev"), limits)
    store.create_upload(UploadSession("free", "app", 0, 250.0, 250.0, "dev"))  # no limits given: never refused


def test_concurrent_creates_never_overshoot(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    """Threads with their own connections, like workers: the count and the insert are one transaction."""
    store = metadata_factory(tmp_path)
    limits = UploadLimits(per_repository=7, per_user=100, live_since=0.0)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def create(index: int) -> None:
        try:
            store.create_upload(UploadSession(f"s{index}", "app", 0, 1.0, 1.0, "ci"), limits)
            ok = True
        except UploadLimitReached:
            ok = False
        with lock:
            outcomes.append(ok)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 7 and outcomes.count(False) == 33


def test_a_schema_1_database_gains_the_user_column(tmp_path: Path) -> None:
    """A root an older lamina wrote (schema 1, no upload_sessions.user) opens, keeps its sessions, and
    records users from then on."""
    root = tmp_path / "root"
    root.mkdir()
    with sqlite3.connect(root / "metadata.db") as db:
        db.execute(
            "CREATE TABLE upload_sessions (id VARCHAR(128) NOT NULL, repository VARCHAR(255) NOT NULL, "
            "size INTEGER NOT NULL, started_at FLOAT NOT NULL, updated_at FLOAT NOT NULL, PRIMARY KEY (id))"
        )
        db.execute("CREATE INDEX ix_upload_sessions_updated ON upload_sessions (updated_at)")
        db.execute("INSERT INTO upload_sessions VALUES ('kept', 'app', 5, 1.0, 2.0)")
        db.execute("PRAGMA user_version = 1")
    storage = open_storage(root, synchronous="OFF")
    try:
        assert storage.metadata.get_upload("kept") == UploadSession("kept", "app", 5, 1.0, 2.0, None)
        storage.metadata.create_upload(UploadSession("new", "app", 0, 3.0, 3.0, "ci"), UploadLimits(2, 1, 0.0))
        with pytest.raises(UploadLimitReached):
            storage.metadata.create_upload(UploadSession("more", "x", 0, 3.0, 3.0, "ci"), UploadLimits(9, 1, 0.0))
    finally:
        storage.close()
    with sqlite3.connect(root / "metadata.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 2
        indexes = {row[1] for row in db.execute("PRAGMA index_list(upload_sessions)")}
    assert {"ix_upload_sessions_repository", "ix_upload_sessions_user"} <= indexes
    open_storage(root, synchronous="OFF").close()  # a second open finds the column there: no error

"""open_storage and Storage: layout, idempotent and concurrent creation, clear errors, fork safety."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from store_helpers import blob_digest, stream

import lamina.store
from lamina.store import Storage, StoreError, UploadSession, open_storage

FORK = multiprocessing.get_context("fork")


def test_layout_and_pragmas(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "new" / "root")
    root = tmp_path / "new" / "root"
    assert storage.paths.root == root
    for name in ("blobs", "uploads", "tmp"):
        assert (root / name).is_dir()
    assert storage.paths.blob(blob_digest(b"x")) == root / "blobs/sha256/2d/" / blob_digest(b"x").encoded
    storage.metadata.link_blob("r", blob_digest(b"x"), 1)
    with sqlite3.connect(root / "metadata.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
    storage.close()


def test_open_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    first = open_storage(tmp_path)
    first.metadata.link_blob("r", blob_digest(b"x"), 1)
    first.blobs.put(blob_digest(b"x"), b"x")
    first.close()
    second = open_storage(tmp_path)
    assert second.metadata.linked_blob_size("r", blob_digest(b"x")) == 1
    assert second.blobs.size(blob_digest(b"x")) == 1
    second.close()


def _open_at_once(root: Path, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    storage = open_storage(root)
    storage.metadata.link_blob("r", blob_digest(b"x"), 1)


@pytest.mark.parametrize("round_", range(12))
def test_processes_opening_a_fresh_root_at_once(tmp_path: Path, round_: int) -> None:
    """Registry workers forked together open a new root at once. The WAL switch used to fail about one
    time in fifteen with "database is locked" (SQLite skips its busy handler there), hence the rounds."""
    barrier = FORK.Barrier(6)
    workers = [FORK.Process(target=_open_at_once, args=(tmp_path / "root", barrier)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    assert open_storage(tmp_path / "root").metadata.linked_blob_size("r", blob_digest(b"x")) == 1


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("I am a file")
    with pytest.raises(StoreError, match=f"storage root {not_a_dir} is not a writable directory"):
        open_storage(not_a_dir)
    with pytest.raises(StoreError, match="is not a writable directory"):
        open_storage(not_a_dir / "below")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "metadata.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=f"metadata database {tmp_path / 'metadata.db'}: file is not a database"):
        open_storage(tmp_path)


def test_bad_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous mode 'SOMETIMES'"):
        open_storage(tmp_path / "bad", synchronous="SOMETIMES")
    assert not (tmp_path / "bad").exists()
    assert open_storage(tmp_path, synchronous="normal").metadata.synchronous == "NORMAL"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    open_storage(tmp_path).close()
    with sqlite3.connect(tmp_path / "metadata.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this lamina"):
        open_storage(tmp_path)


def _use_inherited(storage: Storage, queue: object) -> None:
    storage.metadata.link_blob("child", blob_digest(b"c"), 1)
    queue.put(list(storage.metadata.list_repositories(None, None)))  # type: ignore[attr-defined]


def test_storage_opened_before_fork_works_in_children(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    storage.metadata.link_blob("parent", blob_digest(b"p"), 1)  # the write pool holds a connection now
    assert storage.metadata.repository_exists("parent")  # and this thread has its read connection
    queue = FORK.Queue()
    children = [FORK.Process(target=_use_inherited, args=(storage, queue)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [c.exitcode for c in children] == [0, 0]
    assert queue.get(timeout=5) == ["child", "parent"]
    # the parent's own connections still work after the children exit
    storage.metadata.link_blob("parent2", blob_digest(b"q"), 1)
    assert list(storage.metadata.list_repositories(None, None)) == ["child", "parent", "parent2"]
    storage.reopen()
    assert storage.metadata.repository_exists("child")


def test_blob_put_leaves_no_temp_files(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    storage.blobs.put(blob_digest(b"x"), b"x")
    with pytest.raises(ValueError):
        storage.blobs.put(blob_digest(b"y"), b"not y")
    assert list((tmp_path / "tmp").iterdir()) == []
    mode = (tmp_path / "blobs/sha256" / blob_digest(b"x").encoded[:2] / blob_digest(b"x").encoded).stat().st_mode
    assert stat.S_IMODE(mode) == 0o400


def test_public_api_is_pinned() -> None:
    assert sorted(lamina.store.__all__) == [
        "BlobReferenced",
        "BlobStore",
        "BlobUnknown",
        "FilesystemBlobStore",
        "FilesystemUploadStore",
        "ManifestRecord",
        "ManifestReference",
        "MetadataStore",
        "MissingReference",
        "ReferenceSizeMismatch",
        "ReferrerRecord",
        "S3BlobStore",
        "S3UploadStore",
        "SqliteMetadataStore",
        "Storage",
        "StoreError",
        "StorePaths",
        "TagCondition",
        "TagImmutable",
        "TagPreconditionFailed",
        "UploadConflict",
        "UploadLimitReached",
        "UploadLimits",
        "UploadSession",
        "UploadStore",
        "UploadUnknown",
        "open_storage",
    ]


async def test_registry_restart_mid_upload(tmp_path: Path) -> None:
    """The whole restart path: session in metadata, bytes on disk, new process state, then commit."""
    data = b"0123456789" * 10_000
    storage = open_storage(tmp_path)
    storage.metadata.create_upload(UploadSession("u1", "app", 0, 10.0, 10.0))
    storage.uploads.create("u1")
    size = await storage.uploads.append("u1", 0, stream(data[:40_000]))
    storage.metadata.update_upload("u1", size, 20.0)
    storage.close()

    restarted = open_storage(tmp_path)
    session = restarted.metadata.get_upload("u1")
    assert session is not None and session.size == restarted.uploads.current_size("u1") == 40_000
    await restarted.uploads.append("u1", session.size, stream(data[40_000:]))
    assert await restarted.uploads.commit("u1", blob_digest(data)) == len(data)
    restarted.metadata.link_blob("app", blob_digest(data), len(data))
    restarted.metadata.delete_upload("u1")
    assert restarted.metadata.linked_blob_size("app", blob_digest(data)) == len(data)
    assert restarted.blobs.size(blob_digest(data)) == len(data)
    restarted.close()


def test_duplicate_upload_session_is_a_store_error(storage: Storage) -> None:
    storage.metadata.create_upload(UploadSession("dup", "app", 0, 1.0, 1.0))
    with pytest.raises(StoreError, match="'dup' already exists"):
        storage.metadata.create_upload(UploadSession("dup", "app", 0, 1.0, 1.0))


def test_janitor_helpers(storage: Storage) -> None:
    storage.uploads.create("b")
    storage.uploads.create("a")
    assert storage.uploads.session_ids() == ["a", "b"]
    stale = storage.paths.tmp / "blob-crashed"
    stale.write_bytes(b"half")
    os.utime(stale, (100.0, 100.0))
    fresh = storage.paths.tmp / "blob-writing"
    fresh.write_bytes(b"busy")
    assert storage.blobs.sweep_tmp(older_than=time.time() - 3600) == 1
    assert sorted(p.name for p in storage.paths.tmp.iterdir()) == ["blob-writing"]


def test_iter_digests_ignores_stray_files(storage: Storage) -> None:
    storage.blobs.put(blob_digest(b"x"), b"x")
    prefix = storage.paths.blob(blob_digest(b"x")).parent
    (prefix / "not-a-digest").write_bytes(b"")
    (prefix / (blob_digest(b"x").encoded[:2] + "zz")).write_bytes(b"")
    (storage.paths.blobs / "md5").mkdir()
    (storage.paths.blobs / "sha256" / "stray-file").write_bytes(b"")
    assert list(storage.blobs.iter_digests()) == [blob_digest(b"x")]

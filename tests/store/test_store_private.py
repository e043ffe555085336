"""The registry's storage is private to its owner: root and directories 0700, files 0600, blobs 0400,
SQLite's database and its -wal/-shm included, whatever the process umask; an older, wider root is
tightened when opened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import blob_digest, stream

from lamina.store import UploadSession, open_storage


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask a registry could start with: explicit modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def readable_by_others(root: Path) -> list[str]:
    """Every path under ``root`` (and root itself) that group or others can read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        if stat.S_IMODE(path.lstat().st_mode) & 0o077:
            found.append(f"{path.relative_to(root)} {stat.filemode(path.lstat().st_mode)}")
    return found


@pytest.mark.usefixtures("open_umask")
async def test_everything_the_store_writes_is_private(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    storage = open_storage(root)
    data = b"layer bytes " * 10_000
    storage.metadata.create_upload(UploadSession("u1", "app", 0, 10.0, 10.0))
    storage.uploads.create("u1")
    await storage.uploads.append("u1", 0, stream(data[:50_000]))
    storage.uploads.create("u2")  # a session still in progress when we look
    await storage.uploads.append("u2", 0, stream(b"partial"))
    assert stat.S_IMODE((root / "uploads" / "u2" / "data").stat().st_mode) == 0o600
    await storage.uploads.append("u1", 50_000, stream(data[50_000:]))
    await storage.uploads.commit("u1", blob_digest(data))
    storage.metadata.link_blob("app", blob_digest(data), len(data))
    storage.blobs.put(blob_digest(b"config"), b"config")
    assert (root / "metadata.db-wal").exists() and (root / "metadata.db-shm").exists()
    assert readable_by_others(root) == []
    assert stat.S_IMODE((root / "metadata.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "metadata.db-wal").stat().st_mode) == 0o600
    assert stat.S_IMODE(storage.paths.blob(blob_digest(data)).stat().st_mode) == 0o400
    storage.close()


def test_an_older_open_root_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    open_storage(root).close()
    os.chmod(root, 0o755)
    for name in ("blobs", "uploads", "tmp"):
        os.chmod(root / name, 0o755)
    for name in ("metadata.db", "metadata.db-wal", "metadata.db-shm"):
        (root / name).touch()
        os.chmod(root / name, 0o644)
    storage = open_storage(root)
    storage.metadata.link_blob("r", blob_digest(b"x"), 1)  # still a working database
    assert storage.metadata.linked_blob_size("r", blob_digest(b"x")) == 1
    storage.close()
    assert readable_by_others(root) == []

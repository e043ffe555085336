"""Store fixtures: every protocol suite runs against every implementation listed here.

An implementation is a factory ``root -> store`` so tests can open a second instance on the same root
(another worker process, or the same process after a restart). Adding a backend = adding one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lamina.store import (
    FilesystemBlobStore,
    FilesystemUploadStore,
    SqliteMetadataStore,
    Storage,
    open_storage,
)


def _filesystem_blobs(root: Path) -> FilesystemBlobStore:
    return open_storage(root).blobs


def _filesystem_uploads(root: Path) -> tuple[FilesystemUploadStore, FilesystemBlobStore]:
    """The upload store and the blob store its commits land in."""
    storage = open_storage(root)
    return storage.uploads, storage.blobs


def _sqlite_metadata(root: Path) -> SqliteMetadataStore:
    store = open_storage(root).metadata
    store.pull_granularity = 0.0  # every record_pull writes, so tests see each one
    return store


BLOB_STORES: dict[str, Callable[[Path], FilesystemBlobStore]] = {"filesystem": _filesystem_blobs}
UPLOAD_STORES: dict[str, Callable[[Path], tuple[FilesystemUploadStore, FilesystemBlobStore]]] = {
    "filesystem": _filesystem_uploads
}
METADATA_STORES: dict[str, Callable[[Path], SqliteMetadataStore]] = {"sqlite": _sqlite_metadata}


@pytest.fixture(params=sorted(BLOB_STORES))
def blob_factory(request: pytest.FixtureRequest) -> Callable[[Path], FilesystemBlobStore]:
    return BLOB_STORES[request.param]


@pytest.fixture(params=sorted(UPLOAD_STORES))
def upload_factory(
    request: pytest.FixtureRequest,
) -> Callable[[Path], tuple[FilesystemUploadStore, FilesystemBlobStore]]:
    return UPLOAD_STORES[request.param]


@pytest.fixture(params=sorted(METADATA_STORES))
def metadata_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], SqliteMetadataStore]]:
    opened: list[SqliteMetadataStore] = []

    def factory(root: Path) -> SqliteMetadataStore:
        store = METADATA_STORES[request.param](root)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(tmp_path / "root")
    yield opened
    opened.close()

"""Store fixtures: every protocol suite runs against every implementation listed here.

An implementation is a factory ``root -> store`` so tests can open a second instance on the same root
(another worker process, or the same process after a restart). Adding a backend = adding one entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.ceph import s3_url
from helpers.postgres import scratch_database
from lamina.store import (
    FilesystemBlobStore,
    FilesystemUploadStore,
    MetadataStore,
    SqliteMetadataStore,
    Storage,
    open_storage,
)
from lamina.store.postgres import PostgresMetadataStore
from lamina.store.s3blobs import S3BlobStore
from lamina.store.s3uploads import S3UploadStore, open_s3


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


@pytest.fixture(params=[*sorted(BLOB_STORES), "s3"])
def blob_factory(request: pytest.FixtureRequest) -> Callable[[Path], FilesystemBlobStore | S3BlobStore]:
    if request.param == "s3":  # a real Ceph RGW (tests/helpers/ceph.py): a bucket prefix per root
        rgw = request.getfixturevalue("ceph_rgw")
        return lambda root: open_s3(s3_url(rgw, root))[0]
    return BLOB_STORES[request.param]


@pytest.fixture(params=[*sorted(UPLOAD_STORES), "s3"])
def upload_factory(
    request: pytest.FixtureRequest,
) -> Callable[[Path], tuple[FilesystemUploadStore | S3UploadStore, FilesystemBlobStore | S3BlobStore]]:
    if request.param == "s3":
        rgw = request.getfixturevalue("ceph_rgw")

        def s3(root: Path) -> tuple[S3UploadStore, S3BlobStore]:
            blobs, uploads = open_s3(s3_url(rgw, root))
            return uploads, blobs

        return s3
    return UPLOAD_STORES[request.param]


@pytest.fixture(params=[*sorted(METADATA_STORES), "postgresql"])
def metadata_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], MetadataStore]]:
    """``root -> store``; on PostgreSQL (a real server, tests/helpers/pgfixture.py) a scratch database
    per root, so a second store on the same root is another connection pool on the same database."""
    opened: list[MetadataStore] = []
    with contextlib.ExitStack() as stack:
        databases: dict[Path, str] = {}

        def factory(root: Path) -> MetadataStore:
            store: MetadataStore
            if request.param == "postgresql":
                server = request.getfixturevalue("postgres_server")
                if root not in databases:
                    databases[root] = stack.enter_context(scratch_database(server.url, drop=False))
                store = PostgresMetadataStore(databases[root], pull_granularity=0.0)
                store.create_schema()
            else:
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

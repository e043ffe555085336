"""Registry storage: metadata (SQLite, or PostgreSQL) and blobs (filesystem, or S3) behind small protocols:
the blob and upload protocols of ``base``, the metadata roles of ``roles``.

The HTTP layer calls :func:`open_storage` once per process (or once before forking: every store is
fork-safe, see :mod:`lamina.store.sqlite` and :mod:`lamina.store.postgres`) and talks only to the
protocol methods of the three stores. The on-disk layout is drawn in :mod:`lamina.store.paths`, the
tables in :mod:`lamina.store.schema`, every SQL statement is in :mod:`lamina.store.statements`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .base import (
    BlobReferenced,
    BlobStore,
    BlobUnknown,
    ManifestRecord,
    ManifestReference,
    MissingReference,
    ReferenceSizeMismatch,
    ReferrerRecord,
    StoreError,
    TagCondition,
    TagImmutable,
    TagPreconditionFailed,
    UploadConflict,
    UploadLimitReached,
    UploadLimits,
    UploadSession,
    UploadStore,
    UploadUnknown,
)
from .filesystem import FilesystemBlobStore, FilesystemUploadStore
from .paths import StorePaths
from .private import private_dir, private_file
from .roles import MetadataStore
from .s3blobs import S3BlobStore
from .s3uploads import S3UploadStore, open_s3
from .sqlite import SqliteMetadataStore

__all__ = [
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


@dataclass
class Storage:
    """The three stores over one root; ``paths`` tells where everything lives on disk."""

    paths: StorePaths
    blobs: FilesystemBlobStore | S3BlobStore
    uploads: FilesystemUploadStore | S3UploadStore
    metadata: MetadataStore

    def close(self) -> None:
        self.metadata.close()

    def reopen(self) -> None:
        """Close this process's database connections; they reopen on next use.

        Never required after fork: every connection remembers its process, and a forked worker opens its
        own on first use without touching the parent's."""
        self.metadata.close()


def open_storage(
    root: Path, *, synchronous: str = "FULL", blobs: str | None = None, metadata: str | None = None
) -> Storage:
    """Create (idempotently, race-safe across processes) and open the storage under ``root``; with
    ``blobs`` (``s3://BUCKET/PREFIX?...``, :mod:`lamina.store.s3client`) blob bytes and upload sessions
    live in that S3 bucket instead of under ``root``; with ``metadata`` (``postgresql://USER@HOST:PORT/DB``,
    :mod:`lamina.store.postgres`) the metadata lives in that database (migrated here) instead of
    ``root/metadata.db``.

    Raises StoreError naming the root when it cannot be created or written. Everything is private to the
    owner (see :mod:`lamina.store.private`); a root an older version left open is tightened here."""
    paths = StorePaths(Path(root).absolute())
    store: MetadataStore
    if metadata is not None:
        from .postgres import PostgresMetadataStore  # psycopg loads only for a registry that uses it

        store = PostgresMetadataStore(metadata)
    else:
        store = SqliteMetadataStore(paths.metadata_db, synchronous=synchronous)  # validates before touching disk
    try:
        for directory in paths.directories():
            private_dir(directory)
        if metadata is None:
            private_file(paths.metadata_db, create=True)  # SQLite gives -wal and -shm this file's mode
            for sqlite_file in paths.metadata_sidecars():
                private_file(sqlite_file, create=False)
        probe = paths.tmp / f"probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"storage root {paths.root} is not a writable directory: {exc.strerror or exc}") from exc
    store.create_schema()
    if blobs is not None:
        s3_blobs, s3_uploads = open_s3(blobs)
        return Storage(paths=paths, blobs=s3_blobs, uploads=s3_uploads, metadata=store)
    local = FilesystemBlobStore(paths)
    return Storage(paths=paths, blobs=local, uploads=FilesystemUploadStore(paths), metadata=store)

"""Registry storage: metadata (SQLite) and blobs (filesystem) behind the small protocols of ``base``.

The HTTP layer calls :func:`open_storage` once per process (or once before forking: every store is
fork-safe, see :mod:`lamina.store.sqlite`) and talks only to the protocol methods of the three stores.
The on-disk layout is drawn in :mod:`lamina.store.paths`, the tables in :mod:`lamina.store.schema`.
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
    MetadataStore,
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
    blobs: FilesystemBlobStore
    uploads: FilesystemUploadStore
    metadata: SqliteMetadataStore

    def close(self) -> None:
        self.metadata.close()

    def reopen(self) -> None:
        """Close this process's database connections; they reopen on next use.

        Never required after fork: every connection remembers its process, and a forked worker opens its
        own on first use without touching the parent's."""
        self.metadata.close()


def open_storage(root: Path, *, synchronous: str = "FULL") -> Storage:
    """Create (idempotently, race-safe across processes) and open the storage under ``root``.

    Raises StoreError naming the root when it cannot be created or written. Everything is private to the
    owner (see :mod:`lamina.store.private`); a root an older version left open is tightened here."""
    paths = StorePaths(Path(root).absolute())
    metadata = SqliteMetadataStore(paths.metadata_db, synchronous=synchronous)  # validates before touching disk
    try:
        for directory in paths.directories():
            private_dir(directory)
        private_file(paths.metadata_db, create=True)  # SQLite gives -wal and -shm this file's mode
        for sqlite_file in paths.metadata_sidecars():
            private_file(sqlite_file, create=False)
        probe = paths.tmp / f"probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"storage root {paths.root} is not a writable directory: {exc.strerror or exc}") from exc
    metadata.create_schema()
    blobs = FilesystemBlobStore(paths)
    return Storage(paths=paths, blobs=blobs, uploads=FilesystemUploadStore(paths), metadata=metadata)

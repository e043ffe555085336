"""The builder's local content store: blobs by digest, written as transactions.

Layout under the store root (one directory per build state)::

    blobs/sha256/<hex>      complete, verified, read-only blobs
    ingest/<random>         bytes being written; never read, swept when stale

A write hashes while writing, fsyncs, checks size and digest, then renames into ``blobs/`` (atomic on
one filesystem) and makes the file read-only, as containerd's local writer does. A build killed
halfway leaves only an ``ingest/`` file behind, which nothing reads; two builds writing the same blob
both succeed (the rename of identical bytes is idempotent).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.durable import fsync_dir
from lamina.oci import Digest

__all__ = ["BlobWriter", "ContentError", "ContentStore"]

_CHUNK = 1 << 20
_STALE_INGEST_SECONDS = 24 * 3600


class ContentError(Exception):
    """A blob is missing or its bytes do not match its digest."""


class BlobWriter:
    """A file being ingested; :meth:`commit` verifies and publishes it."""

    def __init__(self, store: ContentStore, handle: BinaryIO, path: Path) -> None:
        self._store = store
        self._handle = handle
        self.path = path
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self, expected: Digest | None = None, expected_size: int | None = None) -> Digest:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        actual = Digest("sha256", self._hash.hexdigest())
        if expected is not None and actual != expected:
            raise ContentError(f"blob digest mismatch: expected {expected}, got {actual}")
        if expected_size is not None and self.size != expected_size:
            raise ContentError(f"blob {actual}: expected {expected_size} bytes, got {self.size}")
        self._store._publish(self.path, actual)
        return actual


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "ingest").mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.encoded

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, digest: Digest) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise ContentError(f"blob {digest} is not in the local content store") from None
        if not digest.verify(data):
            raise ContentError(f"blob {digest} in the local content store is corrupt")
        return data

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """Write a blob; call ``commit`` inside the block. Anything not committed is discarded."""
        path = self.root / "ingest" / os.urandom(16).hex()
        handle = open(path, "xb")  # noqa: SIM115 - closed by commit or below
        blob = BlobWriter(self, handle, path)
        try:
            yield blob
        finally:
            if not handle.closed:
                handle.close()
            path.unlink(missing_ok=True)

    def write_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        with self.writer() as blob:
            blob.write(data)
            return blob.commit(expected, len(data))

    def ingest_file(self, source: Path, expected: Digest | None = None) -> Digest:
        """Copy ``source`` in, hashing as it goes (the source may be anywhere; it is left in place)."""
        with self.writer() as blob, open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                blob.write(chunk)
            return blob.commit(expected)

    def ingest_path(self) -> Path:
        """A fresh private path in ``ingest/`` for a downloader that verifies as it writes (then :meth:`adopt`)."""
        return self.root / "ingest" / os.urandom(16).hex()

    def adopt(self, temp: Path, digest: Digest) -> None:
        """Publish a file already written and verified under ``ingest/`` (by the registry client)."""
        if (self.root / "ingest") not in temp.parents:
            raise ContentError(f"cannot adopt {temp}: not in {self.root / 'ingest'}")
        self._publish(temp, digest)

    def _publish(self, temp: Path, digest: Digest) -> None:
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp, 0o444)
        os.replace(temp, target)
        fsync_dir(target.parent)

    def sweep_ingest(self, older_than: float = _STALE_INGEST_SECONDS) -> int:
        """Remove ingest files left by killed builds; returns how many were removed."""
        removed = 0
        cutoff = time.time() - older_than
        for entry in (self.root / "ingest").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
                    removed += 1
        return removed



"""fsck's view of blobs stored as S3 objects: list them, re-hash one, tell one state from another.

The same three questions :class:`lamina.store.filesystem.FilesystemBlobStore` answers for files
(``iter_files``, ``check``, ``identity``), so ``lamina registry fsck`` checks an S3-backed registry the
way it checks a local root: every object re-hashed, the database compared with the objects both ways.
An object's identity is its size and ``LastModified`` (an object is replaced whole, never changed in
place); inode and ctime are 0. Keys under ``blobs/`` that are not digests are left alone (the
registry never writes one; there is no stray file to quarantine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import PurePosixPath

from lamina.oci import Digest

from .filesystem import BlobCheck, FileIdentity
from .s3blobs import READ_CHUNK, S3BlobStore
from .s3client import is_missing

__all__ = ["S3CheckBlobs"]


class S3CheckBlobs:
    """Read-only checks of an S3 blob store (blocking calls, for fsck's thread or command)."""

    def __init__(self, blobs: S3BlobStore) -> None:
        self.blobs = blobs
        self.s3 = blobs.client.s3
        self.bucket = blobs.location.bucket

    def _head(self, digest: Digest) -> FileIdentity | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self.blobs.key(digest))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return FileIdentity(0, int(head["ContentLength"]), int(head["LastModified"].timestamp() * 1e9), 0)

    def identity(self, digest: Digest) -> FileIdentity | None:
        return self._head(digest)

    def check(self, digest: Digest) -> BlobCheck | None:
        """Re-hash the object as it streams (None when it is gone)."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.blobs.key(digest))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        hasher = hashlib.new(digest.algorithm)
        body = response["Body"]
        try:
            while block := body.read(READ_CHUNK):
                hasher.update(block)
        finally:
            body.close()
        modified = int(response["LastModified"].timestamp() * 1e9)
        identity = FileIdentity(0, int(response["ContentLength"]), modified, 0)
        return BlobCheck(digest, f"{digest.algorithm}:{hasher.hexdigest()}", identity)

    def iter_files(self) -> Iterator[tuple[PurePosixPath, Digest | None]]:
        """Every blob object as ``s3://BUCKET/KEY`` with its digest, in key order."""
        for digest in self.blobs.iter_digests():
            yield PurePosixPath(f"s3://{self.bucket}/{self.blobs.key(digest)}"), digest

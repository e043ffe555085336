"""fsck's view of blobs stored as S3 objects: list them, re-hash one, tell one state from another.

The same three questions :class:`lamina.store.filesystem.FilesystemBlobStore` answers for files
(``iter_files``, ``check``, ``identity``), so ``lamina registry fsck`` checks an S3-backed registry the
way it checks a local root: every object re-hashed, the database compared with the objects both ways.
An object's identity is its ETag, size and ``LastModified``
(:func:`lamina.store.s3blobs.object_identity`: an object is replaced whole, never changed in place).
Keys under ``blobs/`` that are not digests are left alone (the registry never writes one; there is no
stray file to quarantine). Several objects are re-hashed at once (:attr:`S3CheckBlobs.parallel`): each
is one GET streamed through SHA-256, bound by the network and S3's latency more than by the CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import PurePosixPath

from lamina.oci import Digest, DigestError, parse_digest

from .filesystem import BlobCheck, FileIdentity
from .s3blobs import READ_CHUNK, S3BlobStore, object_identity
from .s3client import is_missing

__all__ = ["S3CheckBlobs"]


class S3CheckBlobs:
    """Read-only checks of an S3 blob store (blocking calls, for fsck's thread or command)."""

    parallel = 8  # objects re-hashed at once by fsck

    def __init__(self, blobs: S3BlobStore) -> None:
        self.blobs = blobs
        self.s3 = blobs.client.s3
        self.bucket = blobs.location.bucket

    def identity(self, digest: Digest) -> FileIdentity | None:
        return self.blobs.identity(digest)

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
        identity = object_identity(str(response["ETag"]), int(response["ContentLength"]), response["LastModified"])
        return BlobCheck(digest, f"{digest.algorithm}:{hasher.hexdigest()}", identity)

    def iter_files(self) -> Iterator[tuple[PurePosixPath, Digest | None]]:
        """Every blob object as ``s3://BUCKET/KEY`` with its digest, in key order."""
        for path, digest, _ in self.iter_objects():
            yield path, digest

    def iter_objects(self) -> Iterator[tuple[PurePosixPath, Digest, FileIdentity]]:
        """Every blob object with its digest and its identity as the listing gives it (no HEAD per object);
        keys under ``blobs/`` that are not digests are skipped."""
        prefix = self.blobs.location.key("blobs") + "/"
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                algorithm, _, encoded = key[len(prefix):].partition("/")
                try:
                    digest = parse_digest(f"{algorithm}:{encoded}")
                except DigestError:
                    continue
                identity = object_identity(str(item["ETag"]), int(item["Size"]), item["LastModified"])
                yield PurePosixPath(f"s3://{self.bucket}/{key}"), digest, identity

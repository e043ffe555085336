"""Phase 2 of garbage collection (:mod:`lamina.store.sweep`) over blobs stored as S3 objects.

The protocol is the filesystem's with the object's ``LastModified`` in place of the file's mtime: an
upload writes its blob object again when it commits (:meth:`lamina.store.s3uploads.S3UploadStore.commit`
puts or copies it even when an identical object exists), so a blob just pushed is never older than the
grace period, and a link is only created while the GC gate is held shared after checking the object
exists. S3's ``LastModified`` has one-second precision, far below any grace period.
"""

from __future__ import annotations

from lamina.oci import Digest

from .s3blobs import S3BlobStore
from .s3client import is_missing

__all__ = ["S3SweepBlobs"]


class S3SweepBlobs:
    """:class:`lamina.store.sweep.SweepBlobs` over an S3 blob store (blocking calls)."""

    def __init__(self, blobs: S3BlobStore) -> None:
        self.blobs = blobs

    def modified(self, digest: Digest) -> tuple[int, float] | None:
        try:
            head = self.blobs.client.s3.head_object(Bucket=self.blobs.location.bucket, Key=self.blobs.key(digest))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return int(head["ContentLength"]), float(head["LastModified"].timestamp())

    def remove(self, digest: Digest) -> bool:
        """Delete the object; False when it was already gone (S3's DELETE succeeds either way, so ask first)."""
        if self.modified(digest) is None:
            return False
        self.blobs.delete(digest)
        return True

"""Complete, verified blobs as S3 objects: ``<prefix>/blobs/<algorithm>/<hex>``.

Implements :class:`lamina.store.base.BlobStore` over any S3 API. A blob object is written only by
:meth:`S3BlobStore.put` (small content whose digest is checked first) or by
:class:`lamina.store.s3uploads.S3UploadStore` after the upload's digest was verified, so an object under
``blobs/`` is complete and correct when it appears (S3 makes a PUT or a completed multipart upload
visible whole, never in part).

Reads are ranged GETs streamed in 1 MiB pieces. A read of the whole blob is hashed as it streams, and
its last piece is held back until the hash matches: bytes that changed inside the store are never
handed out complete (the response breaks off and the client, which checks digests, retries or fails).
A client can also fetch the object itself: :meth:`S3BlobStore.redirect_url` presigns a GET (SigV4,
valid :data:`PRESIGN_SECONDS`), which the registry answers as a 307 when the ``redirect`` option is on.

An object's identity (:func:`object_identity`, what verification records and fsck's repairs compare) is
its ETag, size and ``LastModified``: S3 replaces an object whole, and a replacement with other bytes has
another ETag (the MD5 of the body, or of the part MD5s for a multipart upload).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from lamina.oci import Digest, DigestError, parse_digest

from .base import BlobUnknown, StoreError
from .filesystem import FileIdentity
from .s3client import S3Client, content_md5, is_missing

__all__ = ["PRESIGN_SECONDS", "READ_CHUNK", "CorruptObject", "S3BlobStore", "object_identity"]

READ_CHUNK = 1 << 20
PRESIGN_SECONDS = 1200  # 20 minutes, as CNCF distribution's S3 driver


def object_identity(etag: str, size: int, modified: datetime) -> FileIdentity:
    """A blob object's identity in :class:`FileIdentity`'s four integers: 56 bits of the ETag's SHA-256 in
    place of the inode, the size, ``LastModified`` in ns as the mtime, 0 as the ctime."""
    tag = int.from_bytes(hashlib.sha256(etag.strip('"').encode()).digest()[:7], "big")
    return FileIdentity(tag, size, int(modified.timestamp()) * 1_000_000_000, 0)


class CorruptObject(StoreError):
    """A whole-blob read whose bytes do not hash to the digest (raised after the last piece was withheld)."""

    def __init__(self, digest: Digest, actual: str, identity: FileIdentity) -> None:
        super().__init__(f"blob {digest} in S3 hashes to {actual}: not served; delete it and push it again")
        self.digest, self.actual, self.identity = digest, actual, identity


class S3BlobStore:
    """The BlobStore protocol on S3; every method blocks (call from a thread) except ``read``."""

    remote = True  # HEAD answers from metadata; no local file to sendfile

    def __init__(self, client: S3Client) -> None:
        self.client = client
        self.location = client.location

    def key(self, digest: Digest) -> str:
        return self.location.key("blobs", digest.algorithm, digest.encoded)

    def _head(self, digest: Digest) -> dict[str, Any] | None:
        """The object's HEAD answer; None when it is absent (other errors propagate)."""
        try:
            return self.client.s3.head_object(Bucket=self.location.bucket, Key=self.key(digest))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise

    def size(self, digest: Digest) -> int | None:
        head = self._head(digest)
        return None if head is None else int(head["ContentLength"])

    def identity(self, digest: Digest) -> FileIdentity | None:
        """The object's identity (:func:`object_identity`) from a HEAD; None when it is absent."""
        head = self._head(digest)
        if head is None:
            return None
        return object_identity(str(head["ETag"]), int(head["ContentLength"]), head["LastModified"])

    def local_path(self, digest: Digest) -> Path | None:
        return None

    def redirect_url(self, digest: Digest, expires: int = PRESIGN_SECONDS) -> str | None:
        """A presigned GET of the blob object (computed locally: no request to S3), or None when the
        ``redirect`` option is off and blobs are streamed through the registry."""
        if not self.location.redirect:
            return None
        return str(
            self.client.s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.location.bucket, "Key": self.key(digest)}, ExpiresIn=expires
            )
        )

    def read_small(self, digest: Digest, limit: int) -> bytes | None:
        """The whole blob when it has at most ``limit`` bytes (blocking); None when absent or larger.
        Not verified here: the caller checks the digest."""
        size = self.size(digest)
        if size is None or size > limit:
            return None
        try:
            body = self.client.s3.get_object(Bucket=self.location.bucket, Key=self.key(digest))["Body"]
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        with contextlib.closing(body):
            data = bytes(body.read(limit + 1))
        return data if len(data) <= limit else None

    async def read(
        self, digest: Digest, start: int = 0, end: int | None = None,
        *, verified: Callable[[FileIdentity], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` (end exclusive, None: to the end); BlobUnknown if absent. A whole
        read that hashed right calls ``verified`` with the object's identity before its last piece; one that
        did not raises :class:`CorruptObject` instead of yielding it."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range {start}-{end} is outside blob {digest}: not a range")
        if end is not None and end == start:
            return
        params: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.key(digest)}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self.client.run(lambda: self.client.s3.get_object(**params))
        except Exception as exc:
            if is_missing(exc):
                raise BlobUnknown(digest) from None
            if "InvalidRange" in str(exc):
                raise ValueError(f"byte range {start}-{end} is outside blob {digest}") from None
            raise
        body = response["Body"]
        total = int(response["ContentLength"])
        content_range = response.get("ContentRange")  # "bytes FIRST-LAST/SIZE" when a Range was sent
        whole = start == 0 and (not content_range or str(content_range).endswith(f"/{total}"))
        if end is not None and total != end - start:
            body.close()
            raise ValueError(f"byte range {start}-{end} is outside blob {digest} ({total} bytes available)")
        hasher = hashlib.new(digest.algorithm) if whole else None
        held: bytes | None = None
        received = 0
        try:
            while True:
                block = await self.client.run(body.read, READ_CHUNK)
                if not block:
                    break
                received += len(block)
                if hasher is not None:
                    await _hash(hasher, block)
                if held is not None:
                    yield held
                held = block
            if received != total:
                raise StoreError(f"blob {digest}: S3 sent {received} of {total} bytes")
            if hasher is not None:
                identity = object_identity(str(response.get("ETag", "")), total, response["LastModified"])
                if hasher.hexdigest() != digest.encoded:
                    raise CorruptObject(digest, f"{digest.algorithm}:{hasher.hexdigest()}", identity)
                if verified is not None:
                    verified(identity)
            if held is not None:
                yield held
        finally:
            body.close()

    def put(self, digest: Digest, data: bytes) -> None:
        """Store small content after checking it hashes to ``digest`` (bytes crossing into the store)."""
        if not digest.verify(data):
            raise ValueError(f"content does not match digest {digest}")
        self.client.s3.put_object(
            Bucket=self.location.bucket, Key=self.key(digest), Body=data, ContentMD5=content_md5(data),
            ContentType="application/octet-stream",
        )

    def delete(self, digest: Digest) -> None:
        self.client.s3.delete_object(Bucket=self.location.bucket, Key=self.key(digest))

    def iter_digests(self) -> Iterator[Digest]:
        """Every blob object, in key order; objects under ``blobs/`` that are not digests are skipped."""
        prefix = self.location.key("blobs") + "/"
        paginator = self.client.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                algorithm, _, encoded = str(item["Key"])[len(prefix) :].partition("/")
                try:
                    yield parse_digest(f"{algorithm}:{encoded}")
                except DigestError:
                    continue

    def sweep_tmp(self, older_than: float) -> int:
        """Nothing to sweep: S3 writes need no temp files (a multipart upload never abandoned here lives
        under its session's prefix and goes with the session, see S3UploadStore.discard)."""
        return 0


async def _hash(hasher: Any, block: bytes) -> None:
    if len(block) >= 256 << 10:
        await asyncio.to_thread(hasher.update, block)
    else:
        hasher.update(block)

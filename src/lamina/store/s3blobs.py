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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from lamina.oci import Digest, DigestError, parse_digest

from .base import BlobUnknown, StoreError
from .s3client import S3Client, content_md5, is_missing

__all__ = ["PRESIGN_SECONDS", "READ_CHUNK", "S3BlobStore"]

READ_CHUNK = 1 << 20
PRESIGN_SECONDS = 1200  # 20 minutes, as CNCF distribution's S3 driver


class S3BlobStore:
    """The BlobStore protocol on S3; every method blocks (call from a thread) except ``read``."""

    remote = True  # HEAD answers from metadata; no local file to sendfile

    def __init__(self, client: S3Client) -> None:
        self.client = client
        self.location = client.location

    def key(self, digest: Digest) -> str:
        return self.location.key("blobs", digest.algorithm, digest.encoded)

    def size(self, digest: Digest) -> int | None:
        try:
            head = self.client.s3.head_object(Bucket=self.location.bucket, Key=self.key(digest))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return int(head["ContentLength"])

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

    async def read(self, digest: Digest, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` (end exclusive, None: to the end); BlobUnknown if absent."""
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
            if hasher is not None and hasher.hexdigest() != digest.encoded:
                raise StoreError(
                    f"blob {digest} in S3 hashes to {digest.algorithm}:{hasher.hexdigest()}: not served; "
                    "delete it and push it again"
                )
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

"""Upload sessions on S3, streamed as S3 multipart uploads, resumable on any replica.

Implements :class:`lamina.store.base.UploadStore`. Everything a session is lives in the bucket, under
``<prefix>/uploads/<id>/``, so a chunked upload (distribution-spec end-5/end-6: PATCH ... PUT) may send
each request to a different registry process:

- ``state``: JSON with the bytes received so far (``size``), the multipart upload's id and its parts
  (number, ETag, size), the key of the tail object, and the running SHA-256 state (:mod:`.s3hash`);
- ``tail-<size>``: the bytes after the last part. S3 parts other than the last must be at least 5 MiB,
  while a registry client may PATCH any size (the OCI conformance suite sends a few bytes), so bytes
  that do not fill a part wait here; the next append reads them back and sends them on in its first
  part. Its name carries the size it ends at, so a new tail never overwrites the one ``state`` names;
- ``lock``: created with ``If-None-Match: *`` (a conditional create, atomic on S3) by the one request
  that appends or commits; a second concurrent request gets :class:`UploadConflict` (HTTP 416) at once,
  as with the filesystem store's flock. The holder rewrites it every :data:`LOCK_REFRESH_SECONDS` while
  it works (a background task, whether or not bytes arrive); a lock not rewritten for
  :data:`LOCK_STALE_SECONDS` belonged to a process that died (SIGKILL, a lost host) and is taken over,
  at once when that process ran on this host and is gone (:mod:`.s3lock`);
- ``data``: the multipart upload's key; completed at commit, then copied to ``blobs/<alg>/<hex>``.

An append is all-or-nothing: ``state`` is rewritten only after every part and the new tail are stored,
so an append that fails or is cancelled midway leaves the session at the size the client last saw (parts
it sent with higher numbers are never listed in ``state``, and are replaced or dropped at completion).

The digest across replicas: each append resumes the saved SHA-256 state, hashes the bytes as they
arrive, and saves the state with the new size, so commit knows the digest without reading anything back.
Other algorithms (sha512) are hashed at commit by reading the assembled object back once; a mismatch
then ends the session (its multipart upload is already completed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lamina.oci import Digest

from .base import StoreError, UploadConflict, UploadUnknown
from .paths import check_session_id
from .s3blobs import S3BlobStore
from .s3client import S3Client, content_md5, is_missing, is_precondition_failed
from .s3hash import ResumableSha256
from .s3lock import lock_body, may_take_over
from .s3parts import PartWriter

__all__ = ["LOCK_REFRESH_SECONDS", "LOCK_STALE_SECONDS", "S3UploadStore", "open_s3"]

log = logging.getLogger("lamina.store.s3")

MiB = 1 << 20
COPY_PART = 1 << 30  # CopyObject stops at 5 GiB; beyond, the blob is copied in parts of this size
LOCK_STALE_SECONDS = 30.0
LOCK_REFRESH_SECONDS = 10.0


@dataclass(slots=True)
class _State:
    size: int = 0
    upload_id: str | None = None
    parts: list[list[Any]] = field(default_factory=list)  # [number, etag, size]
    tail: str | None = None  # key of the tail object
    tail_size: int = 0
    sha256: str = field(default_factory=lambda: base64.b64encode(ResumableSha256().save()).decode())

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, session_id: str) -> _State:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"upload session {session_id!r}: its state object is not valid ({exc})") from None


class S3UploadStore:
    """The UploadStore protocol on S3; ``create``/``current_size``/``discard`` block (call from a thread)."""

    def __init__(self, client: S3Client, blobs: S3BlobStore) -> None:
        self.client = client
        self.location = client.location
        self.blobs = blobs
        self.lock_stale_seconds = LOCK_STALE_SECONDS
        self.lock_refresh_seconds = LOCK_REFRESH_SECONDS

    # -- keys and small objects -------------------------------------------------------------------

    def _key(self, session_id: str, name: str = "") -> str:
        return self.location.key("uploads", check_session_id(session_id), name)

    def _get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"].read())
        except Exception as exc:
            if is_missing(exc):
                return None
            raise

    def _put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if create_only else {}
        self.client.s3.put_object(
            Bucket=self.location.bucket, Key=key, Body=data, ContentMD5=content_md5(data), **extra
        )

    def _load(self, session_id: str) -> _State | None:
        try:
            data = self._get(self._key(session_id, "state"))
        except ValueError:  # not a valid session id
            return None
        return None if data is None else _State.from_json(data, session_id)

    # -- sessions ---------------------------------------------------------------------------------

    def create(self, session_id: str) -> None:
        try:
            self._put(self._key(session_id, "state"), _State().to_json(), create_only=True)
        except Exception as exc:
            if is_precondition_failed(exc):
                raise StoreError(f"upload session {session_id!r} already exists") from None
            raise

    def current_size(self, session_id: str) -> int | None:
        state = self._load(session_id)
        return None if state is None else state.size

    def discard(self, session_id: str) -> None:
        """Delete the session's objects and abort its multipart uploads (also one a crash left unlisted)."""
        try:
            prefix = self._key(session_id) + "/"
        except ValueError:
            return
        s3, bucket = self.client.s3, self.location.bucket
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", ())
        for upload in uploads:
            try:
                s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            except Exception as exc:
                if not is_missing(exc):
                    raise
        keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", ())]
        state_key = prefix + "state"
        for key in sorted(keys, key=lambda k: k == state_key):  # state last: the session exists until then
            s3.delete_object(Bucket=bucket, Key=key)

    def discard_unless_busy(self, session_id: str) -> bool:
        """``discard`` unless a request holds the session's lock right now (a PATCH still streaming)."""
        try:
            lock = self._get(self._key(session_id, "lock"))
        except ValueError:
            return True
        if lock is not None and not self._stale(lock):
            return False
        self.discard(session_id)
        return True

    def last_modified(self, session_id: str) -> float | None:
        """The newest write to any of the session's objects (a working request rewrites its lock every
        ``lock_refresh_seconds``), or None when it has none."""
        try:
            prefix = self._key(session_id) + "/"
        except ValueError:
            return None
        found = self.client.s3.list_objects_v2(Bucket=self.location.bucket, Prefix=prefix).get("Contents", ())
        return max((item["LastModified"].timestamp() for item in found), default=None)

    def session_ids(self) -> list[str]:
        """Ids with objects in the bucket, sorted: a janitor discards those metadata no longer knows."""
        prefix = self.location.key("uploads") + "/"
        paginator = self.client.s3.get_paginator("list_objects_v2")
        ids: list[str] = []
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix, Delimiter="/"):
            ids.extend(str(p["Prefix"])[len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", ()))
        return sorted(ids)

    # -- the lock ---------------------------------------------------------------------------------

    def _stale(self, lock: bytes) -> bool:
        return may_take_over(lock, self.lock_stale_seconds)

    async def _keep_lock(self, session_id: str, token: str) -> None:
        """Rewrite the lock every ``lock_refresh_seconds`` until cancelled (the append or commit ended)."""
        while True:
            await asyncio.sleep(self.lock_refresh_seconds)
            try:
                await self.client.run(self._refresh, session_id, token)
            except Exception as exc:  # S3 briefly unreachable: the next round tries again
                log.warning("upload %s: could not refresh its lock in S3: %s", session_id, exc)

    def _acquire(self, session_id: str) -> tuple[_State, str]:
        """Take the session's lock and read its state; UploadUnknown, or UploadConflict when busy."""
        try:
            lock_key = self._key(session_id, "lock")
        except ValueError:
            raise UploadUnknown(session_id) from None
        token = uuid.uuid4().hex
        for _ in range(2):
            try:
                self._put(lock_key, lock_body(token), create_only=True)
                break
            except Exception as exc:
                if not is_precondition_failed(exc):
                    raise
            held = self._get(lock_key)
            if held is not None and not self._stale(held):
                state = self._load(session_id)
                if state is None:
                    raise UploadUnknown(session_id) from None
                raise UploadConflict(f"upload {session_id} is busy with another request", state.size) from None
            self.client.s3.delete_object(Bucket=self.location.bucket, Key=lock_key)  # a crashed holder's
        else:
            size = self.current_size(session_id) or 0
            raise UploadConflict(f"upload {session_id} is busy with another request", size)
        state = self._load(session_id)
        if state is None:  # committed or discarded before we came
            self._release(session_id, token)
            raise UploadUnknown(session_id)
        return state, token

    async def _locked(self, session_id: str) -> tuple[_State, str]:
        """``_acquire`` in a thread; if the caller is cancelled meanwhile, a lock it got is released."""
        future = asyncio.ensure_future(self.client.run(self._acquire, session_id))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            if not future.cancelled() and future.exception() is None:
                await _until_done(self.client.run, self._release, session_id, future.result()[1])
            raise

    def _refresh(self, session_id: str, token: str) -> None:
        self._put(self._key(session_id, "lock"), lock_body(token))

    def _release(self, session_id: str, token: str) -> None:
        key = self._key(session_id, "lock")
        held = self._get(key)
        if held is not None and json.loads(held).get("owner") == token:
            self.client.s3.delete_object(Bucket=self.location.bucket, Key=key)

    # -- append -----------------------------------------------------------------------------------

    async def append(self, session_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Append ``chunks`` at ``offset`` (== current size, else UploadConflict); return the new size."""
        state, token = await self._locked(session_id)
        created: str | None = None
        keeper = asyncio.create_task(self._keep_lock(session_id, token))
        try:
            if offset != state.size:
                raise UploadConflict(
                    f"upload {session_id}: chunk starts at byte {offset} but the upload has {state.size} bytes",
                    state.size,
                )
            tail = b""
            if state.tail is not None:
                found = await self.client.run(self._get, state.tail)
                if found is None or len(found) != state.tail_size:
                    raise StoreError(f"upload session {session_id!r}: its tail object {state.tail} is missing")
                tail = found
            writer = PartWriter(
                ResumableSha256.load(base64.b64decode(state.sha256)), state.upload_id, state.parts, tail,
                lambda: self._start_multipart(session_id),
                lambda upload_id, number, data: self._upload_part(session_id, upload_id, number, data),
                self.client.run,
            )
            try:
                async for chunk in chunks:
                    await writer.feed(chunk)
                upload_id, parts, rest = await writer.finish()
            except BaseException:
                created = writer.created  # no state names it: aborted below
                await writer.abort()
                raise
            if writer.received == 0:
                return state.size
            size = state.size + writer.received
            new = _State(
                size=size,
                upload_id=upload_id,
                parts=parts,
                tail=self._key(session_id, f"tail-{size}") if rest else None,
                tail_size=len(rest),
                sha256=base64.b64encode(writer.hasher.save()).decode(),
            )
            await self.client.run(self._save, session_id, state, new, rest)
            return new.size
        finally:
            keeper.cancel()
            await _until_done(self.client.run, self._end_append, session_id, token, created)

    def _save(self, session_id: str, old: _State, new: _State, tail: bytes) -> None:
        if new.tail is not None:
            self._put(new.tail, tail)
        self._put(self._key(session_id, "state"), new.to_json())
        if old.tail is not None and old.tail != new.tail:
            self.client.s3.delete_object(Bucket=self.location.bucket, Key=old.tail)

    def _end_append(self, session_id: str, token: str, abandoned_upload: str | None) -> None:
        if abandoned_upload is not None:  # created by an append that failed: no state names it
            try:
                self.client.s3.abort_multipart_upload(
                    Bucket=self.location.bucket, Key=self._key(session_id, "data"), UploadId=abandoned_upload
                )
            except Exception as exc:
                if not is_missing(exc):
                    raise
        self._release(session_id, token)

    def _start_multipart(self, session_id: str) -> str:
        created = self.client.s3.create_multipart_upload(
            Bucket=self.location.bucket, Key=self._key(session_id, "data"), ContentType="application/octet-stream"
        )
        return str(created["UploadId"])

    def _upload_part(self, session_id: str, upload_id: str, number: int, data: bytes) -> str:
        result = self.client.s3.upload_part(
            Bucket=self.location.bucket, Key=self._key(session_id, "data"), UploadId=upload_id,
            PartNumber=number, Body=data, ContentMD5=content_md5(data),
        )
        return str(result["ETag"])

    # -- commit -----------------------------------------------------------------------------------

    async def commit(self, session_id: str, expected: Digest) -> int:
        """Verify the upload hashes to ``expected``, write it to ``blobs/``, drop the session; return its
        size. ValueError (session kept, for sha256) when the digest does not match."""
        state, token = await self._locked(session_id)
        keeper = asyncio.create_task(self._keep_lock(session_id, token))
        try:
            if expected.algorithm == "sha256":
                actual = ResumableSha256.load(base64.b64decode(state.sha256)).hexdigest()
                if actual != expected.encoded:
                    raise ValueError(
                        f"upload {session_id}: the {state.size} bytes received hash to sha256:{actual}, "
                        f"not {expected}"
                    )
            await self.client.run(self._publish, session_id, state, expected)
            # the session ends while we hold its lock: a request that takes the lock next finds no state
            await self.client.run(self.client.s3.delete_object, Bucket=self.location.bucket,
                                    Key=self._key(session_id, "state"))
        finally:
            keeper.cancel()
            await _until_done(self.client.run, self._release, session_id, token)
        await self.client.run(self.discard, session_id)
        return state.size

    def _publish(self, session_id: str, state: _State, expected: Digest) -> None:
        s3, bucket = self.client.s3, self.location.bucket
        target = self.blobs.key(expected)
        if not state.parts:  # under one part: the bytes are the tail object (or nothing)
            data = b"" if state.tail is None else self._get(state.tail)
            if data is None or len(data) != state.size:
                raise StoreError(f"upload session {session_id!r}: its tail object {state.tail} is missing")
            if expected.algorithm != "sha256" and not expected.verify(data):
                self.discard(session_id)
                raise ValueError(f"upload {session_id}: the {state.size} bytes received do not hash to {expected}")
            self._put(target, data)
            return
        source = self._key(session_id, "data")
        parts = [{"PartNumber": int(n), "ETag": str(etag)} for n, etag, _ in state.parts]
        assert state.upload_id is not None
        if state.tail is not None:
            tail = self._get(state.tail)
            if tail is None or len(tail) != state.tail_size:
                raise StoreError(f"upload session {session_id!r}: its tail object {state.tail} is missing")
            number = len(parts) + 1
            parts.append({"PartNumber": number, "ETag": self._upload_part(session_id, state.upload_id, number, tail)})
        s3.complete_multipart_upload(
            Bucket=bucket, Key=source, UploadId=state.upload_id, MultipartUpload={"Parts": parts}
        )
        if expected.algorithm != "sha256":
            actual = self._hash_object(source, expected.algorithm)
            if actual != expected.encoded:
                self.discard(session_id)
                raise ValueError(
                    f"upload {session_id}: the {state.size} bytes received hash to {expected.algorithm}:{actual}, "
                    f"not {expected}; the session is closed, upload the blob again"
                )
        self._copy(source, target, state.size)

    def _hash_object(self, key: str, algorithm: str) -> str:
        import hashlib

        hasher = hashlib.new(algorithm)
        body = self.client.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"]
        try:
            while block := body.read(MiB):
                hasher.update(block)
        finally:
            body.close()
        return hasher.hexdigest()

    def _copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy (no bytes through this process): CopyObject, or UploadPartCopy past 5 GiB."""
        s3, bucket = self.client.s3, self.location.bucket
        copy_source = {"Bucket": bucket, "Key": source}
        if size <= 5 * (1 << 30):
            s3.copy_object(Bucket=bucket, Key=target, CopySource=copy_source, ContentType="application/octet-stream",
                           MetadataDirective="REPLACE")
            return
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=target)["UploadId"]
        try:
            parts = []
            for number, first in enumerate(range(0, size, COPY_PART), start=1):
                last = min(size, first + COPY_PART) - 1
                result = s3.upload_part_copy(
                    Bucket=bucket, Key=target, UploadId=upload_id, PartNumber=number, CopySource=copy_source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
                parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
            s3.complete_multipart_upload(Bucket=bucket, Key=target, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
        except BaseException:
            s3.abort_multipart_upload(Bucket=bucket, Key=target, UploadId=upload_id)
            raise


async def _until_done(run: Callable[..., Awaitable[Any]], function: Any, *args: Any) -> None:
    """Run ``function`` in a thread (``run``) and return only once it ended, even when cancelled meanwhile
    (the lock must be released before the caller's next request on the session can take it)."""
    future = asyncio.ensure_future(run(function, *args))
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


def open_s3(url: str) -> tuple[S3BlobStore, S3UploadStore]:
    """The blob and upload stores for the ``blobs = "s3://..."`` setting, after checking that the bucket
    answers (StoreError naming the bucket, the endpoint and what to do when it does not)."""
    from .s3client import parse_s3_url

    try:
        location = parse_s3_url(url)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    client = S3Client(location)
    client.check_access()
    blobs = S3BlobStore(client)
    return blobs, S3UploadStore(client, blobs)

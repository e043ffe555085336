"""Verification on read: a blob whose stored bytes no longer match its digest is never served silently.

A blob GET is answered with sendfile(2), which cannot hash what it sends, so verification happens
before the response starts: the file is re-hashed in a thread, and only a file that matches is sent.
The ``verify_on_read`` setting says how often:

- ``"off"``: never (``lamina registry fsck`` is then the only check);
- ``"first"`` (default): the first GET of each blob file re-hashes it; the result is remembered in the
  database (``blob_checks``, shared by every worker and kept across restarts) and in this process,
  keyed by the file's identity (inode, size, mtime, ctime). Later GETs cost one ``stat`` while the file
  stays the same; any write, truncation or replacement changes the identity and the next GET re-hashes.
  Decay that changes bytes without the filesystem noticing is left to ``fsck`` (or ``"always"``);
- ``"always"``: every GET re-hashes the whole blob first (a range GET too), before the first byte.

HEAD never re-hashes (pushers HEAD every layer; their latency stays a ``stat``).

A blob that fails is quarantined (:func:`lamina.store.integrity.quarantine_blob`: moved to
``ROOT/quarantine/`` with a note, unlinked from every repository) and the GET answers
``404 BLOB_UNKNOWN`` naming the digest and what its bytes hash to. Why 404 and not 500: after the
quarantine the registry really does not have the blob, and every later request says so too; a 500
would invite the client to retry into that same 404, while a 404 on the pusher's next HEAD makes it
upload the blob again, which heals the registry. One ERROR line is logged per blob quarantined.

Concurrent first GETs of one blob in one process wait for a single re-hash.

Blobs in S3 (``blobs = "s3://..."``, :mod:`lamina.store.s3blobs`):

- ``redirect=true`` (the default): a GET is a 307 to a presigned URL and the bytes go from S3 to the
  client, never through the registry, so nothing is verified on read. What vouches for them: the
  digest checked when the upload was committed, ``lamina registry fsck`` (which re-hashes every object
  and quarantines the corrupt ones), and the client, which checks the digest of what it pulls;
- ``redirect=false``: a whole-blob GET is hashed as it streams and its last piece withheld unless the
  digest matches (the store does that in every mode). With ``"first"`` the first such GET of an object
  records it as verified (``blob_checks``, keyed by the object's ETag, size and ``LastModified``); one
  that does not match is quarantined inside the bucket (:mod:`lamina.store.s3integrity`) and unlinked,
  its response breaks off before the end, and every later GET answers ``404 BLOB_UNKNOWN``. A range GET
  of an object not yet verified (``"first"``), or any range GET (``"always"``), re-hashes the whole
  object before the first byte, as for files; ``"off"`` re-hashes nothing and quarantines nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from lamina.oci import Digest
from lamina.store import Storage
from lamina.store.filesystem import BlobCheck, FileIdentity
from lamina.store.integrity import BlobPlace, LocalBlobPlace, is_verified, record_verified
from lamina.store.s3blobs import CorruptObject, S3BlobStore
from lamina.store.s3check import S3CheckBlobs
from lamina.store.s3integrity import S3BlobPlace

from .background import Offloader
from .errors import ErrorCode, RegistryError

__all__ = ["VERIFIER", "VERIFY_MODES", "BlobVerifier"]

log = logging.getLogger("lamina.registry.verify")

VERIFY_MODES = ("off", "first", "always")


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: bool
    identity: FileIdentity | None = None  # the file that was hashed (None: the blob is gone)
    actual: str | None = None  # what a corrupt blob's bytes hash to
    quarantined: str | None = None  # where it went (a path, or s3://BUCKET/KEY)


class BlobVerifier:
    """One per worker process; ``ensure`` is awaited before a blob GET sends anything."""

    def __init__(self, mode: str, memo_size: int = 16384) -> None:
        if mode not in VERIFY_MODES:
            raise ValueError(f"verify_on_read: expected one of {', '.join(VERIFY_MODES)}, got {mode!r}")
        self.mode = mode
        self.memo_size = memo_size
        self._memo: OrderedDict[str, FileIdentity] = OrderedDict()  # verified files, this process
        self._pending: dict[tuple[str, FileIdentity], asyncio.Future[_Verdict]] = {}
        self.hashed = 0  # re-hashes this process ran (for tests and curiosity)

    async def ensure(
        self, storage: Storage, offload: Offloader, digest: Digest, *, hashed_on_the_way: bool = False
    ) -> None:
        """Return when the blob may be sent; RegistryError BLOB_UNKNOWN when it is gone or failed (and
        was quarantined). ``hashed_on_the_way``: a whole read of an S3 object, verified by :meth:`stream`."""
        if self.mode == "off" or hashed_on_the_way:
            return
        for _ in range(2):  # a second round only when the file was replaced while being hashed
            identity = await _identity(storage, digest)
            if identity is None:
                raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in the blob store",
                                    detail={"digest": str(digest)})
            key = str(digest)
            if self.mode == "first" and self._memo.get(key) == identity:
                self._memo.move_to_end(key)
                return
            verdict = await self._verify_once(storage, offload, digest, identity)
            if verdict.ok:
                if self.mode == "first" and verdict.identity is not None:
                    self._remember(key, verdict.identity)
                return
            if verdict.quarantined is not None:
                raise RegistryError(
                    ErrorCode.BLOB_UNKNOWN,
                    f"blob {digest} failed verification: its stored bytes hash to {verdict.actual}; it was "
                    "quarantined and unlinked from every repository: push it again",
                    detail={"digest": str(digest), "quarantined": True},
                )
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} kept changing while it was verified; retry",
                            detail={"digest": str(digest)})

    async def _verify_once(
        self, storage: Storage, offload: Offloader, digest: Digest, identity: FileIdentity
    ) -> _Verdict:
        key = (str(digest), identity)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(offload.run(self._verify, storage, digest, identity))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    def _verify(self, storage: Storage, digest: Digest, identity: FileIdentity) -> _Verdict:
        """In a thread: the database's record first ("first"), else re-hash; quarantine on a mismatch."""
        if self.mode == "first" and is_verified(storage.metadata, digest, identity):
            return _Verdict(True, identity)
        blobs = storage.blobs
        check: BlobCheck | None = (S3CheckBlobs(blobs) if isinstance(blobs, S3BlobStore) else blobs).check(digest)
        self.hashed += 1
        if check is None:
            return _Verdict(False)
        if check.ok:
            if self.mode == "first":
                record_verified(storage.metadata, digest, check.identity)
            return _Verdict(True, check.identity)
        target = self._quarantine(storage, digest, check.identity, check.actual)
        return _Verdict(False, check.identity, check.actual, target)

    def _quarantine(self, storage: Storage, digest: Digest, identity: FileIdentity, actual: str) -> str | None:
        """In a thread: quarantine a blob that failed (and unlink it), with one ERROR line."""
        reason = f"verification on read: the {identity.size} stored bytes hash to {actual}"
        place: BlobPlace = S3BlobPlace(storage.blobs) if isinstance(storage.blobs, S3BlobStore) \
            else LocalBlobPlace(storage.paths)
        target = place.quarantine_blob(storage.metadata, digest, identity, reason, {"actual": actual})
        if target is not None:
            log.error("blob %s failed verification on read (its bytes hash to %s): quarantined to %s and "
                      "unlinked from every repository; clients must push it again", digest, actual, target)
        return target

    async def stream(
        self, storage: Storage, offload: Offloader, digest: Digest, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of a blob in S3, streamed. A whole read is hashed on the way by the
        store; after it, ``"first"`` records the object as verified, and one that failed is quarantined
        (unless ``"off"``) before the error ends the response."""
        blobs = storage.blobs
        assert isinstance(blobs, S3BlobStore), "stream() serves S3 blobs; files go out with sendfile"
        seen: list[FileIdentity] = []
        try:
            async for chunk in blobs.read(digest, start, end, verified=seen.append):
                yield chunk
        except CorruptObject as exc:
            if self.mode != "off":
                await offload.run(self._quarantine, storage, digest, exc.identity, exc.actual)
            raise
        key = str(digest)
        if seen and self.mode == "first" and self._memo.get(key) != seen[0]:
            await offload.run(record_verified, storage.metadata, digest, seen[0])
            self._remember(key, seen[0])

    def _remember(self, key: str, identity: FileIdentity) -> None:
        self._memo[key] = identity
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)


async def _identity(storage: Storage, digest: Digest) -> FileIdentity | None:
    """The blob's identity: a ``stat`` of its file, or a HEAD of its S3 object (in the S3 threads)."""
    blobs = storage.blobs
    if isinstance(blobs, S3BlobStore):
        return await blobs.client.run(blobs.identity, digest)
    return blobs.identity(digest)


VERIFIER = web.AppKey("verifier", BlobVerifier)

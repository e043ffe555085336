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
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from lamina.oci import Digest
from lamina.store import Storage
from lamina.store.filesystem import FileIdentity
from lamina.store.integrity import is_verified, quarantine_blob, record_verified

from .errors import ErrorCode, RegistryError
from .services import Offloader

__all__ = ["VERIFIER", "VERIFY_MODES", "BlobVerifier"]

log = logging.getLogger("lamina.registry.verify")

VERIFY_MODES = ("off", "first", "always")


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: bool
    identity: FileIdentity | None = None  # the file that was hashed (None: the blob is gone)
    actual: str | None = None  # what a corrupt blob's bytes hash to
    quarantined: Path | None = None


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

    async def ensure(self, storage: Storage, offload: Offloader, digest: Digest) -> None:
        """Return when the blob may be sent; RegistryError BLOB_UNKNOWN when it is gone or failed (and
        was quarantined)."""
        if self.mode == "off":
            return
        for _ in range(2):  # a second round only when the file was replaced while being hashed
            identity = storage.blobs.identity(digest)
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
        check = storage.blobs.check(digest)
        self.hashed += 1
        if check is None:
            return _Verdict(False)
        if check.ok:
            if self.mode == "first":
                record_verified(storage.metadata, digest, check.identity)
            return _Verdict(True, check.identity)
        reason = f"verification on read: the {check.identity.size} stored bytes hash to {check.actual}"
        target = quarantine_blob(storage.metadata, storage.paths, digest, check.identity, reason,
                                 {"actual": check.actual})
        if target is not None:
            log.error("blob %s failed verification on read (its bytes hash to %s): quarantined to %s and "
                      "unlinked from every repository; clients must push it again", digest, check.actual, target)
        return _Verdict(False, check.identity, check.actual, target)

    def _remember(self, key: str, identity: FileIdentity) -> None:
        self._memo[key] = identity
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)


VERIFIER = web.AppKey("verifier", BlobVerifier)

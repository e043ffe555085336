"""One append's bytes into S3 multipart-upload parts, received and sent at the same time.

Used by :class:`lamina.store.s3uploads.S3UploadStore`, which owns the session (lock, state, tail).
The event loop hashes each chunk as it arrives (SHA-256, resumable: :mod:`.s3hash`) and gathers
chunks into parts (:func:`part_size`); a full part goes to S3 in a worker thread while the loop goes on
receiving. Up to ``in_flight`` parts are on their way at once; one more waits for the oldest to finish,
and that is the back-pressure on the client's socket (memory per append: ``in_flight + 1`` parts).
Measured through the registry (a 256 MiB push, RGW on the same 2 cores, load average ~11 from other
jobs): one part at a time 34-36 MiB/s, two in flight 36-42 MiB/s, while botocore alone sent multipart
uploads at 70-88 MB/s; the rest goes to receiving, hashing and RGW itself sharing the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from .base import StoreError
from .s3hash import ResumableSha256

__all__ = ["HASH_IN_THREAD", "IN_FLIGHT", "MAX_PARTS", "PART_SIZE", "PartWriter", "part_size"]

MiB = 1 << 20
PART_SIZE = 8 * MiB  # S3's minimum for every part but the last is 5 MiB
MAX_PARTS = 10000  # S3's limit per multipart upload
IN_FLIGHT = 2
HASH_IN_THREAD = 256 << 10  # chunks at least this big are hashed in a thread


def part_size(parts_so_far: int) -> int:
    """8 MiB parts, growing by 8 MiB every 1000 parts: 10,000 parts then hold ~430 GiB."""
    return PART_SIZE * (1 + parts_so_far // 1000)


class PartWriter:
    """Feed chunks; ``finish`` returns the parts (``[number, etag, size]``) and the bytes left over.

    ``start`` creates the multipart upload (returns its id) when the first part is ready; ``send``
    uploads one part (upload id, number, bytes) and returns its ETag. Both block: ``run`` runs them in
    threads."""

    def __init__(
        self,
        hasher: ResumableSha256,
        upload_id: str | None,
        parts: list[list[Any]],
        tail: bytes,
        start: Callable[[], str],
        send: Callable[[str, int, bytes], str],
        run: Callable[..., Awaitable[Any]],
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.hasher = hasher
        self.upload_id = upload_id
        self.created: str | None = None  # an upload id this append created (to abort if it fails)
        self.parts = [list(p) for p in parts]
        self.buffer = bytearray(tail)
        self.received = 0
        self._start = start
        self._send = send
        self._run = run  # runs a blocking call in a thread (S3Client.run)
        self._in_flight = in_flight
        self._pending: list[tuple[int, int, asyncio.Future[str]]] = []  # (number, size, etag)

    async def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if len(chunk) >= HASH_IN_THREAD:
            await asyncio.to_thread(self.hasher.update, chunk)
        else:
            self.hasher.update(chunk)
        self.buffer += chunk
        while len(self.buffer) >= (n := part_size(self._count())):
            if self._count() >= MAX_PARTS - 1:  # the last number stays free for the tail at commit
                raise StoreError(f"the upload needs more than {MAX_PARTS} S3 parts")
            with memoryview(self.buffer) as view:
                piece = bytes(view[:n])
            del self.buffer[:n]
            await self._dispatch(piece)

    async def finish(self) -> tuple[str | None, list[list[Any]], bytes]:
        """Wait for every part; return the upload id, all parts in order, and the bytes not in a part."""
        while self._pending:
            await self._collect_oldest()
        return self.upload_id, self.parts, bytes(self.buffer)

    async def abort(self) -> None:
        """Wait (even when cancelled) until no thread is sending a part any more; results are dropped."""
        for _, _, future in self._pending:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: a failed part is not logged as never awaited
        self._pending.clear()

    def _count(self) -> int:
        return len(self.parts) + len(self._pending)

    async def _dispatch(self, piece: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.created = await self._run(self._start)
        while len(self._pending) >= self._in_flight:
            await self._collect_oldest()
        number = self._count() + 1
        future = asyncio.ensure_future(self._run(self._send, self.upload_id, number, piece))
        self._pending.append((number, len(piece), future))

    async def _collect_oldest(self) -> None:
        number, size, future = self._pending[0]
        etag = await asyncio.shield(future)
        self._pending.pop(0)
        self.parts.append([number, etag, size])

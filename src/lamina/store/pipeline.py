"""One upload stream's pipeline: receive on the event loop, hash and write in threads, in order.

Why: SHA-256 runs at ~190 MB/s per core on CPUs without SHA instructions; hashed on the event loop, a
stream stops being read while each buffer is hashed, and each resume then waits for the client to be
scheduled again. Here the loop only copies into 1 MiB buffers and queues them; the process's hash thread
hashes each one while its write thread ``pwrite``s it (both release the GIL). Used by
:class:`lamina.store.filesystem.FilesystemUploadStore`, which owns the file, the lock and the truncation
that makes an append all-or-nothing; :meth:`Pipeline.abort` guarantees no thread touches the file after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["INLINE_BUFFER", "WRITE_BUFFER", "WRITE_DEPTH", "Pipeline", "pwrite_all"]

# Upload bytes are hashed and written in WRITE_BUFFER units by a worker thread, overlapped with receiving
# the next unit (see Pipeline). Awaiting each unit's thread before reading on (no overlap) was slower than
# writing inline (bench/store_io.py: 1.91 s against 1.52 s for 256 MiB); overlapping is what pays.
WRITE_BUFFER = 1 << 20
# Units of an append hashed inline (on the loop): short stalls for the other requests (~1.4 ms each).
INLINE_BUFFER = 256 << 10
# Buffers one append may have waiting for its thread (memory per upload: WRITE_DEPTH + 1 buffers).
WRITE_DEPTH = 4
# Buffers a hash thread takes from one upload before it serves the next upload waiting for it.
DRAIN_SLICE = 4



def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class Pipeline:
    """One append's bytes, gathered into ``size``-byte buffers that a worker thread hashes and writes in order
    while the event loop goes on receiving (``threaded=False``: hashed and written inline, for comparison).

    Up to ``depth`` buffers wait for the thread, so the loop keeps draining the socket while a buffer is
    hashed: with only one, reading paused for every hash and each resume waited for the client to be
    scheduled again (half the push time on a loaded machine). When the thread falls ``depth`` buffers
    behind, the loop waits, and that is the back-pressure on the socket. One drain job at a time, so the
    hash sees the bytes in order; memory per append is at most ``depth + 1`` buffers."""

    def __init__(self, fd: int, hasher: Any, offset: int, size: int, threaded: bool, depth: int) -> None:
        self.fd = fd
        self.hasher = hasher  # None: the session's earlier bytes were never hashed here; commit rehashes
        self.offset = offset  # where the next handed-off buffer lands
        self.size = size
        self.threaded = threaded
        self.depth = depth
        self.buffer = bytearray(size)
        self.filled = 0
        self._lock = threading.Lock()  # guards the fields below, shared with the drain thread
        self._queue: deque[tuple[bytearray, int, int]] = deque()
        self._free: list[bytearray] = []
        self._draining = False
        self._stop = False
        self._error: BaseException | None = None
        self._room: asyncio.Future[None] | None = None
        self._jobs: list[asyncio.Future[None]] = []
        self._loop = asyncio.get_running_loop()

    async def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        while view:
            if self.filled == self.size:  # handed off only once more bytes come: a one-buffer append stays inline
                await self._hand_off()
            n = min(len(view), self.size - self.filled)
            self.buffer[self.filled : self.filled + n] = view[:n]
            self.filled += n
            view = view[n:]

    async def finish(self) -> int:
        """Write what is left, wait for the thread; return the offset after the last byte."""
        if self.filled and self._jobs:
            await self._hand_off()
        elif self.filled:  # the whole append fit one buffer: hashing it here costs less than a thread hop
            self._write(self.buffer, self.filled, self.offset)
            self.offset += self.filled
            self.filled = 0
        await self._pump(until_empty=True)
        for job in self._jobs:
            await asyncio.shield(job)  # a cancellation must not orphan the running thread
        self._raise_error()
        return self.offset

    async def abort(self) -> None:
        """Stop the thread and wait, whatever happens meanwhile, until it no longer touches the file."""
        with self._lock:
            self._stop = True
        for job in self._jobs:
            while not job.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([job])

    async def _hand_off(self) -> None:
        item = (self.buffer, self.filled, self.offset)
        self.offset += self.filled
        self.filled = 0
        if not self.threaded:
            self._write(*item)
            return
        with self._lock:
            self._queue.append(item)
            self.buffer = self._free.pop() if self._free else bytearray(self.size)
        await self._pump(until_empty=False)

    async def _pump(self, *, until_empty: bool) -> None:
        """Keep a drain job going until fewer than ``depth`` buffers wait (or none, ``until_empty``)."""
        while True:
            with self._lock:
                start = bool(self._queue) and not self._draining and self._error is None
                self._draining = self._draining or start
                done = (not self._queue and not self._draining) if until_empty else len(self._queue) < self.depth
                if not done and self._error is None:
                    self._room = room = self._loop.create_future()
            if start:
                self._jobs = [job for job in self._jobs if not job.done()]
                self._jobs.append(self._loop.run_in_executor(_thread_pool("hash"), self._drain))
            if done or self._error is not None:
                break
            await room
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        """In a hash thread: write and hash up to DRAIN_SLICE queued buffers in order, then yield the thread
        (so one fast stream cannot keep it from the others; the loop starts the next job)."""
        for _ in range(DRAIN_SLICE):
            with self._lock:
                if not self._queue or self._stop:
                    break
                buffer, length, offset = self._queue[0]
            try:
                self._write(buffer, length, offset)
            except BaseException as exc:
                with self._lock:
                    self._error, self._stop = exc, True
                break
            with self._lock:
                self._queue.popleft()
                self._free.append(buffer)
                self._wake()
        with self._lock:
            if self._stop:
                self._queue.clear()
            self._draining = False
            self._wake()

    def _wake(self) -> None:
        """Under the lock: tell a loop waiting in ``_pump`` that something changed."""
        room, self._room = self._room, None
        if room is not None:
            self._loop.call_soon_threadsafe(_resolve, room)

    def _write(self, buffer: bytearray, length: int, offset: int) -> None:
        with memoryview(buffer)[:length] as data:
            if self.hasher is None or not self.threaded:
                pwrite_all(self.fd, data, offset)
                if self.hasher is not None:
                    self.hasher.update(data)
                return
            # the copy into the page cache (slow when writeback throttles) runs on another core meanwhile
            written = _thread_pool("write").submit(pwrite_all, self.fd, data, offset)
            try:
                self.hasher.update(data)
            finally:
                written.result()  # never return while that thread still uses the buffer and the fd


_POOLS_LOCK = threading.Lock()
_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def _thread_pool(role: str) -> ThreadPoolExecutor:
    """This process's one thread for ``role`` (``hash``: upload hashing, ``write``: upload pwrites), created
    after a fork, never inherited. One hash thread per process: the registry runs a worker per CPU, so this
    hashes on every core without a dozen threads thrashing two cores' caches under many concurrent pushes."""
    with _POOLS_LOCK:
        found = _pools.get(role)
        if found is None or found[0] != os.getpid():
            found = _pools[role] = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix=f"lamina-upload-{role}"))
        return found[1]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

"""Bounded producer/consumer stages on threads, to spread layer work over the CPU's cores.

hashlib, ISA-L, zstd and file writes release the GIL on large buffers, so hashing the tar stream,
compressing it and writing it can run beside the tar generation (or, when unpacking, decompression
and hashing beside the file writes). Queues are bounded, so memory stays at a few MiB per layer
whatever its size; an error in any stage stops the others and is re-raised in the caller.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

__all__ = ["Producer", "Stage", "Stopped"]

_DEPTH = 8
_POLL = 0.2
_END = object()


class Stopped(Exception):
    """Raised inside a stage whose pipeline was aborted."""


class Stage:
    """A thread applying ``consume`` to every submitted chunk, in order."""

    def __init__(self, consume: Callable[[bytes], None], name: str) -> None:
        self._consume = consume
        self._queue: queue.Queue[object] = queue.Queue(_DEPTH)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if self._error is None and not self._stopped:
                    self._consume(item)  # type: ignore[arg-type]
        except BaseException as exc:
            self._error = exc
            self._drain()

    def _drain(self) -> None:
        while self._queue.get() is not _END:
            pass

    def submit(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for every submitted chunk to be consumed; re-raise the stage's error, if any."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._stopped = True
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()


class Producer:
    """A thread running ``produce(emit)``; the caller iterates over what it emits."""

    def __init__(self, produce: Callable[[Callable[[bytes], None]], None], name: str) -> None:
        self._produce = produce
        self._queue: queue.Queue[object] = queue.Queue(_DEPTH)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped()
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            self._produce(self._put)
        except Stopped:
            pass
        except BaseException as exc:
            self.error = exc
        finally:
            with contextlib.suppress(Stopped):
                self._put(_END)

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            item = self._queue.get()
            if item is _END:
                self._done = True
                return
            yield item  # type: ignore[misc]

    def drain(self) -> None:
        """Consume the rest, so the producer runs to its end; then wait for it."""
        for _ in self:
            pass
        self._thread.join()

    def abort(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
        self._thread.join()

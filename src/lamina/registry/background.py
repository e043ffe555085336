"""The registry's background plumbing: the offloader for blocking storage calls, and the one schedule the
janitor, gc and lifecycle loops share. No web framework and no settings here: the settings parsers and the
maintenance jobs import it from below :mod:`lamina.registry.config`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["Offloader", "repeat_until_stopped"]

T = TypeVar("T")


class Offloader:
    """Runs blocking storage calls (SQLite writes wait for fsync and for other workers' write locks)
    in threads, and remembers every call until it has finished, so shutdown can wait for all of them
    before the storage is closed: closing SQLite under a running statement crashes the process. It
    tracks the threads' own futures, which complete even when the awaiting request was cancelled."""

    def __init__(self, max_workers: int = 16) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="lamina-store")
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = self._executor.submit(fn, *args)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return asyncio.wrap_future(future)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.submit(fn, *args)

    async def drain(self) -> None:
        """Wait for every submitted call, then stop the threads."""
        pending = list(self._pending)
        if pending:
            await asyncio.get_running_loop().run_in_executor(None, concurrent.futures.wait, pending)
        self._executor.shutdown(wait=True)


async def repeat_until_stopped(
    stop: asyncio.Event,
    interval: float,
    one_round: Callable[[], Awaitable[None]],
    log: logging.Logger,
    what: str,
    *,
    wait_first: bool,
) -> None:
    """Await ``one_round()`` every ``interval`` seconds until ``stop`` is set (``wait_first``: the first
    round comes after one interval, not at once). A failed round is logged as ``<what> failed; retrying
    in N s`` and never ends the loop; a running round is finished, never abandoned."""
    while not stop.is_set():
        if wait_first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
        try:
            await one_round()
        except Exception:
            log.exception("%s failed; retrying in %.0f s", what, interval)
        if not wait_first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

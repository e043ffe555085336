"""Slow-client protection for request bodies, and closing connections whose body was refused.

Blob bodies (uploads) and manifest bodies are read through :func:`paced_chunks`: only the time spent
*waiting for the client* counts (time the server spends writing a chunk to disk, with the socket paused,
does not), and within every ``body_timeout_seconds`` of such waiting the client must deliver
``body_min_bytes_per_second`` times that many bytes. A client that sends nothing, or trickles a few bytes
a second, gets 408 after at most two such windows (``BLOB_UPLOAD_INVALID`` for an upload,
``MANIFEST_INVALID`` for a manifest); the error is raised inside the body stream, so the upload store's
all-or-nothing append keeps none of that chunk and the session can be resumed.

A 408 or 413 answer is sent with ``Connection: close``: the rest of a refused body is never read into
the store, and the connection does not stay open for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader, web

from .errors import ErrorCode, RegistryError
from .limits import LimitSettings

__all__ = ["close_refused_bodies", "paced_chunks"]

_CLOSE_STATUSES = frozenset({408, 413})


_UPLOAD_HINT = "resume the upload from the Range the session reports"


def _too_slow(received: int, waited: float, limits: LimitSettings, code: ErrorCode, hint: str) -> RegistryError:
    return RegistryError(
        code,
        f"the client sent {received} bytes of the body in {waited:.0f} s; at least "
        f"{limits.body_min_bytes_per_second} bytes per second are needed (limits.body_timeout_seconds, "
        f"limits.body_min_bytes_per_second): {hint}",
        status=408,
    )


async def paced_chunks(
    content: StreamReader,
    limits: LimitSettings,
    code: ErrorCode = ErrorCode.BLOB_UPLOAD_INVALID,
    hint: str = _UPLOAD_HINT,
) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; RegistryError ``code`` (408) when the client is too slow."""
    loop = asyncio.get_running_loop()
    window = limits.body_timeout_seconds
    needed = limits.body_min_bytes_per_second * window
    waited = 0.0  # seconds spent waiting for the client in the current window
    received = 0  # bytes received in the current window
    while True:
        started = loop.time()
        try:
            async with asyncio.timeout(max(window - waited, 0.0)):
                chunk = await content.readany()
        except TimeoutError:
            if received < needed or received == 0:
                raise _too_slow(received, window, limits, code, hint) from None
            waited, received = 0.0, 0  # enough came in this window: a new one starts
            continue
        waited += loop.time() - started
        if not chunk:
            return
        received += len(chunk)
        if waited >= window:
            if received < needed:
                raise _too_slow(received, waited, limits, code, hint)
            waited, received = 0.0, 0
        yield chunk


async def close_refused_bodies(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a 408 or 413 closes the connection after the answer (aiohttp still reads
    and drops what the client sends for up to its lingering time, 10 s, so the client can read the answer
    before the close)."""
    if response.status in _CLOSE_STATUSES:
        response.force_close()
        response.headers["Connection"] = "close"  # the headers were prepared before this hook runs

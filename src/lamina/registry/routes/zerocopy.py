"""Zero-copy blob responses under uvloop.

aiohttp's ``FileResponse`` sends a file with ``loop.sendfile`` (sendfile(2)), but uvloop does not
implement ``loop.sendfile`` and aiohttp then falls back to reading the file into memory chunk by chunk.
We keep uvloop (it makes small requests - manifests, HEADs - markedly faster) and restore zero copy:
once the headers have left the transport's buffer, a dedicated thread pool runs sendfile(2) on a
*duplicate* of the socket descriptor, waiting with poll(2) when the socket is full. The duplicate
keeps the socket alive even if the event loop closes its descriptor after a disconnect, so the
bytes can never land on another connection that reused the number. On any other loop, or for TLS,
aiohttp's own path is used.
"""

from __future__ import annotations

import asyncio
import os
import select
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

__all__ = ["BlobFileResponse"]

_SEND_TIMEOUT_MS = 120_000  # no progress for this long: give the connection up
_MAX_CHUNK = 1 << 30
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0


def _pool() -> ThreadPoolExecutor:
    """One pool per process (created after fork), separate from the default executor so slow
    clients never delay metadata writes."""
    global _POOL, _POOL_PID
    if _POOL is None or os.getpid() != _POOL_PID:
        _POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="lamina-sendfile")
        _POOL_PID = os.getpid()
    return _POOL


def _send_all(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
    """sendfile(2) ``count`` bytes on a non-blocking socket; closes ``sock_fd`` (our duplicate)."""
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    try:
        while count > 0:
            try:
                sent = os.sendfile(sock_fd, file_fd, offset, min(count, _MAX_CHUNK))
            except BlockingIOError:
                if not poller.poll(_SEND_TIMEOUT_MS):
                    raise ConnectionResetError("client stopped reading: send timed out") from None
                continue
            if sent == 0:
                raise ConnectionResetError("blob file ended early or connection closed")
            offset += sent
            count -= sent
    finally:
        os.close(sock_fd)


class BlobFileResponse(web.FileResponse):
    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        loop = asyncio.get_running_loop()
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        native = type(loop).__module__.startswith("asyncio")
        if native or sock is None or transport is None or transport.get_extra_info("sslcontext") is not None:
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        while transport.get_write_buffer_size():  # the headers must be on the wire before the body
            if transport.is_closing():
                raise ConnectionResetError("connection lost")
            await asyncio.sleep(0.0005)
        sock_fd = os.dup(sock.fileno())
        try:
            await loop.run_in_executor(_pool(), _send_all, sock_fd, fobj.fileno(), offset, count)
        except OSError as exc:
            transport.close()
            raise ConnectionResetError(f"sending a blob failed: {exc}") from None
        await web.StreamResponse.write_eof(self)
        return writer

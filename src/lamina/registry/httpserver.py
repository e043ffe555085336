"""The registry's HTTP server: aiohttp's, with the requests its HTTP parser rejects answered in the
registry's JSON error format and logged as one line.

aiohttp parses the request line and headers before any middleware runs. What it cannot parse - a
request line or header line longer than ``max_header_bytes`` (431), a NUL or other
control byte in the path, a malformed header (400) - goes to ``RequestHandler.handle_error``, which logs
an ERROR with a traceback and answers ``text/plain``. :class:`RegistryRequestHandler` answers those with
``{"errors": [{"code": "UNSUPPORTED", ...}]}`` (the spec has no code for an unparsable request; the
status says which) and logs one WARNING line naming the client and the problem. The handler is
aiohttp's ``RequestHandler`` with ``handle_error`` overridden; :func:`serve` is ``web.run_app`` with a
runner whose server creates that handler for each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler

from .errors import ErrorCode, RegistryError, error_response

__all__ = ["RegistryRequestHandler", "handler_args", "serve"]

log = logging.getLogger("lamina.registry")


def handler_args(max_header_bytes: int) -> dict[str, Any]:
    """``web.Application(handler_args=...)``: the longest request line and header line aiohttp parses."""
    return {"max_line_size": max_header_bytes, "max_field_size": max_header_bytes}


def _status_and_reason(exc: BaseException | None, message: str | None, limit: int) -> tuple[int, str]:
    """431 for a line over the limit (aiohttp's parser does not say whether it was the request line or a
    header), else 400 with the parser's first line of explanation."""
    if isinstance(exc, LineTooLong):
        return 431, f"the request line or a header line is longer than {limit} bytes (max_header_bytes)"
    if isinstance(exc, BadHttpMethod):
        return 400, "malformed HTTP request: the method is not a valid HTTP token"
    text = (getattr(exc, "message", None) or message or "").strip()
    first = text.splitlines()[0].rstrip(" :.") if text else ""
    return 400, f"malformed HTTP request: {first or 'unreadable request line or headers'}"


class RegistryRequestHandler(RequestHandler):
    """aiohttp's per-connection handler; errors it raises itself answer in the registry's format."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # past the error middleware (500, with its traceback) or a handler timeout (504)
            log.error("error on %s %s: HTTP %d", request.method, request.path, status,
                      exc_info=exc if status == 500 else None)
            error = RegistryError(ErrorCode.UNKNOWN, "internal server error", status=status)
        else:  # aiohttp's parser refused the request (always 400 from aiohttp: refined here)
            status, reason = _status_and_reason(exc, message, self.max_field_size)
            log.warning("malformed request from %s: %s", request.remote or "?", reason)
            error = RegistryError(ErrorCode.UNSUPPORTED, reason, status=status)
        if request.writer.output_size > 0:  # part of a response went out: the connection is broken
            raise ConnectionError("response already started; cannot send the error")
        response = error_response(error)
        response.headers["Docker-Distribution-API-Version"] = "registry/2.0"  # app.py's on_response_prepare
        response.force_close()
        return response


class _RegistryServer(web.Server):
    def __call__(self) -> RegistryRequestHandler:
        return RegistryRequestHandler(self, loop=self._loop, **self._kwargs)


class _RegistryRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _RegistryServer  # same state, one method more: its connections' handler class
        return server


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    loop: asyncio.AbstractEventLoop,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 1024,
    shutdown_timeout: float = 5.0,
) -> None:
    """Serve ``app`` on ``host:port`` (SO_REUSEPORT, for the workers) until SIGINT or SIGTERM, then shut
    down as ``web.run_app`` does: stop listening, finish requests for up to ``shutdown_timeout`` seconds,
    run the app's cleanup, cancel what is left."""
    asyncio.set_event_loop(loop)
    runner = _RegistryRunner(app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=True)
        await site.start()

    try:
        loop.run_until_complete(start())
        loop.run_forever()
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        loop.run_until_complete(runner.cleanup())
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

"""A real HTTP reverse proxy on a free loopback port, in front of one registry, for timing and races.

Tests put it between a build and a registry to decide *when* the registry answers (a delay per
request) and to change the registry *between* two requests of one build (a hook run after the
registry answered and before the build gets the answer: move a tag, delete a blob, run GC). Each
request goes to the real registry over loopback; nothing of lamina is patched. It runs its own event
loop in a thread, so blocking hooks and ``asyncio.run`` builds in the test thread both work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from helpers.registries import free_port

__all__ = ["Hook", "RegistryProxy"]

Hook = Callable[[str, str, int], None]  # (method, path, upstream status) -> None; blocking is fine
Delay = Callable[[str, str], float]  # (method, path) -> seconds to wait before forwarding

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "server",
        "date"}


@dataclass
class RegistryProxy:
    """``with RegistryProxy(upstream_url) as proxy:`` -> ``proxy.host`` is ``127.0.0.1:PORT``.

    ``delay`` chooses a wait before each request is forwarded; ``after`` runs (in a worker thread) once
    the registry answered, before the answer is passed on; ``log`` records (monotonic time the registry
    answered, method, path, status).
    """

    upstream: str
    delay: Delay = lambda method, path: 0.0
    after: Hook | None = None
    log: list[tuple[float, str, str, int]] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        wait = self.delay(request.method, request.path)
        if wait > 0:
            await asyncio.sleep(wait)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
            request.method, f"{self.upstream}{request.path_qs}", headers=headers, data=body or None,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            length = upstream.headers.get("Content-Length")
        self.log.append((time.monotonic(), request.method, request.path, status))
        if self.after is not None:
            await asyncio.to_thread(self.after, request.method, request.path, status)
        if request.method == "HEAD":
            response = web.Response(status=status, headers=out_headers)
            if length is not None:
                response.headers["Content-Length"] = length
            return response
        return web.Response(status=status, headers=out_headers, body=data)

    def _serve(self, started: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def start() -> None:
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            self.port = free_port()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    def __enter__(self) -> RegistryProxy:
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError(f"proxy to {self.upstream} did not start within 10s")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

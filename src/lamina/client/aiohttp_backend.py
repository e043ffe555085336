"""The registry transport over aiohttp, for the two cases the built-in HTTP/1.1 client leaves to it.

1. A caller hands :class:`~lamina.client.RegistryClient` its own ``aiohttp.ClientSession`` (trace hooks,
   a shared pool): every request of that client goes through it.
2. An origin reached through a proxy from the environment (``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``,
   honoured as docker does for every registry but loopback ones): aiohttp's proxy support (CONNECT
   tunnels, proxy credentials) carries those requests.

Answers and failures are presented as :mod:`lamina.client.http11`'s (same attributes, same exception
classes), so the transport above handles both clients alike. aiohttp is imported only here.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import yarl

from .http11 import BodyError, ConnectError, HTTPError, ProtocolError, RequestBody, TLSError
from .urls import URL

__all__ = ["AiohttpBackend", "proxied"]


def proxied(url: URL) -> bool:
    """True when the environment names a proxy for ``url`` (and ``NO_PROXY`` does not exempt its host)."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    if url.scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass_environment(url.raw_host or "", proxies)


def _failure(exc: BaseException, what: str, *, body: bool) -> HTTPError:
    if isinstance(exc, aiohttp.ClientSSLError):
        certificate = isinstance(exc, aiohttp.ClientConnectorCertificateError)
        cause: Any = exc.certificate_error if certificate else exc.os_error  # type: ignore[attr-defined]
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause)
        return TLSError(f"{what}: {reason}", certificate=certificate, reason=str(reason))
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError):
        return BodyError(f"{what}: {text}") if body else ConnectError(f"{what}: {text}")
    return ProtocolError(f"{what}: {text}")


_ERRORS = (aiohttp.ClientError, TimeoutError)


class _Answer:
    """An aiohttp response behind :class:`lamina.client.http11.Response`'s interface."""

    def __init__(self, resp: aiohttp.ClientResponse, url: URL) -> None:
        self._resp = resp
        self.url = url
        self.status = resp.status
        self.reason = resp.reason or ""
        self.headers = resp.headers

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(n):
                yield chunk
        except _ERRORS as exc:
            raise _failure(exc, f"reading {self.url.human_repr()}", body=True) from None

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except _ERRORS as exc:
            raise _failure(exc, f"reading {self.url.human_repr()}", body=True) from None

    async def json(self) -> Any:
        import json

        return json.loads(await self.read())

    def release(self) -> None:
        self._resp.release()


class AiohttpBackend:
    """Requests through one aiohttp session: the caller's (left open) or our own (closed by :meth:`close`)."""

    def __init__(self, session: aiohttp.ClientSession | None = None, *, limit_per_host: int = 16,
                 connect_timeout: float = 30.0, read_timeout: float = 300.0) -> None:
        self._session = session
        self._own = session is None
        self._limit = limit_per_host
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=4 * self._limit, limit_per_host=self._limit)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                                  trust_env=True)
            self._own = True
        return self._session

    async def request(self, method: str, url: URL, *, headers: Mapping[str, str] | None = None,
                      body: RequestBody = None, ssl_context: ssl.SSLContext | bool = True) -> _Answer:
        try:
            resp = await self._get().request(method, yarl.URL(str(url), encoded=True), headers=dict(headers or {}),
                                             data=body, allow_redirects=False, ssl=ssl_context)
        except _ERRORS as exc:
            raise _failure(exc, f"{method} {url.human_repr()}", body=False) from None
        return _Answer(resp, url)

    async def close(self) -> None:
        if self._own and self._session is not None and not self._session.closed:
            await self._session.close()

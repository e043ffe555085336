"""A small HTTP/1.1 client on asyncio streams: what the registry client needs, and nothing it does not.

Why not aiohttp on this path: importing aiohttp costs a fresh ``lamina build`` process ~0.15 s (more on a
loaded machine) and builds two TLS contexts with the system CA bundle even for a plain-HTTP registry on
loopback, while a fully cached build is a dozen small requests. This client imports only asyncio (which
the builder runs on anyway) and builds a TLS context only for the first ``https`` origin.

What it implements (RFC 9112, HTTP/1.1 message syntax; RFC 9110 semantics):

- persistent connections with a pool per origin (scheme, host, port) and at most ``limit_per_host``
  requests in flight per origin; an idle connection is reused only if the server has not closed it and
  it has been idle less than ``keepalive`` seconds; a request whose reused connection turns out closed
  before any byte of the answer is sent once more on a new connection when its body can be sent again;
- request bodies as bytes or an async iterable of bytes (``Content-Length`` when the caller gives it,
  else ``Transfer-Encoding: chunked``); ``Content-Length: 0`` for POST/PUT/PATCH without a body;
- response framing (RFC 9112 section 6.3): none for HEAD, 1xx, 204 and 304; ``chunked`` (extensions and
  trailers read and dropped); ``Content-Length``; else until the server closes. 1xx interim answers
  are skipped. Bodies are never decompressed (registry blobs are verified byte for byte);
- redirects are not followed (the registry transport follows them itself, so Authorization never
  leaks to another origin);
- timeouts: ``connect_timeout`` to open a connection (TLS handshake included), ``read_timeout`` for each
  wait on the server (head or body), as aiohttp's ``sock_connect``/``sock_read``.

Failures are :class:`HTTPError` subclasses with one line each: :class:`ConnectError` (could not connect,
or the connection broke before the answer), :class:`BodyError` (the body broke off), :class:`TLSError`
(handshake or certificate; ``certificate`` tells which) and :class:`ProtocolError` (not HTTP/1.x).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

from .urls import URL

__all__ = [
    "Answer", "BodyError", "ConnectError", "HTTPClient", "HTTPError", "Headers", "ProtocolError", "RequestBody",
    "Response", "TLSError", "default_ssl_context",
]

RequestBody = bytes | AsyncIterable[bytes] | None
_MAX_LINE = 256 << 10  # one status, header or chunk-size line; also the stream's read buffer (x2)
_MAX_HEADERS = 256 << 10  # every header line of one answer together
_NO_BODY_STATUS = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HTTPError(Exception):
    """Base of every failure of this client; ``str()`` is one line naming what failed."""


class ConnectError(HTTPError):
    """No connection, or it broke before the whole answer head arrived (worth a retry)."""


class BodyError(HTTPError):
    """The answer's body broke off or is malformed (worth a retry of the whole request)."""


class ProtocolError(HTTPError):
    """The server's answer is not HTTP/1.x (a retry will not help)."""


class TLSError(HTTPError):
    """TLS handshake failure; ``certificate`` is True when the server's certificate did not verify."""

    def __init__(self, message: str, *, certificate: bool, reason: str) -> None:
        super().__init__(message)
        self.certificate = certificate
        self.reason = reason


_default_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The system's CA roots (or ``SSL_CERT_FILE``/``SSL_CERT_DIR``'s), built on the first https request."""
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
        _default_context.set_alpn_protocols(["http/1.1"])
    return _default_context


class Answer(Protocol):
    """What the registry transport reads of an answer (:class:`Response`, or aiohttp's behind an adapter)."""

    status: int
    reason: str
    url: URL

    @property
    def headers(self) -> Mapping[str, str]: ...
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...
    async def read(self) -> bytes: ...
    async def json(self) -> Any: ...
    def release(self) -> None: ...


class Headers(Mapping[str, str]):
    """Response headers: case-insensitive names, repeated fields kept in order (``get`` = the first)."""

    __slots__ = ("_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._first: dict[str, str] = {}
        for name, value in fields:
            self._first.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(name for name, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def getall(self, name: str) -> list[str]:
        key = name.lower()
        return [value for field, value in self._fields if field.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class _Connection:
    __slots__ = ("idle_since", "key", "reader", "reused", "writer")

    def __init__(self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key, self.reader, self.writer = key, reader, writer
        self.idle_since = time.monotonic()
        self.reused = False

    def usable(self, keepalive: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and time.monotonic() - self.idle_since < keepalive)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Response:
    """One answer: ``status``, ``reason``, ``headers``, ``url`` (what was asked); the body is read with
    :meth:`read` or :meth:`iter_chunked`, and :meth:`release` gives the connection back (or closes it when
    the body was not read to its end)."""

    def __init__(self, client: HTTPClient, conn: _Connection, method: str, url: URL, status: int, reason: str,
                 headers: Headers, keep_alive: bool, read_timeout: float) -> None:
        self._client, self._conn = client, conn
        self.url, self.status, self.reason, self.headers = url, status, reason, headers
        self._keep_alive = keep_alive
        self._timeout = read_timeout
        self._body: bytes | None = None
        self._remaining: int | None = None  # Content-Length framing: bytes still to come
        self._chunked = False
        self._chunk_left = 0  # chunked framing: bytes left of the current chunk
        self._done = False
        self._released = False
        if method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
            self._done = True
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._chunked = True
        elif "Content-Length" in headers:
            value = headers["Content-Length"].strip()
            if not value.isdigit():
                raise ProtocolError(f"{method} {url.human_repr()}: invalid Content-Length {value!r}")
            self._remaining = int(value)
            self._done = self._remaining == 0
        else:
            self._keep_alive = False  # the body ends when the server closes

    async def _read(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._conn.reader.read(n)
        except TimeoutError:
            raise BodyError(f"no data from {self.url.human_repr()} for {self._timeout:g} s") from None
        except OSError as exc:
            raise BodyError(f"reading {self.url.human_repr()}: {exc.strerror or exc}") from None

    async def _readline(self) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                line = await self._conn.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise BodyError(f"{self.url.human_repr()}: the connection closed inside a chunked body") from None
        except asyncio.LimitOverrunError:
            raise BodyError(f"{self.url.human_repr()}: a chunk header longer than {_MAX_LINE} bytes") from None
        except TimeoutError:
            raise BodyError(f"no data from {self.url.human_repr()} for {self._timeout:g} s") from None
        except OSError as exc:
            raise BodyError(f"reading {self.url.human_repr()}: {exc.strerror or exc}") from None
        return line

    async def _next(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body; b"" once it has ended."""
        if self._done:
            return b""
        if self._remaining is not None:
            data = await self._read(min(n, self._remaining))
            if not data:
                raise BodyError(f"{self.url.human_repr()}: the connection closed {self._remaining} bytes before "
                                "the end of the body (Content-Length)")
            self._remaining -= len(data)
            self._done = self._remaining == 0
            return data
        if self._chunked:
            return await self._next_chunked(n)
        data = await self._read(n)
        self._done = not data
        return data

    async def _next_chunked(self, n: int) -> bytes:
        while self._chunk_left == 0:
            line = await self._readline()
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BodyError(f"{self.url.human_repr()}: invalid chunk size {size_text[:20]!r}") from None
            if size == 0:
                while (await self._readline()).strip():  # trailer fields, dropped
                    pass
                self._done = True
                return b""
            self._chunk_left = size
        data = await self._read(min(n, self._chunk_left))
        if not data:
            raise BodyError(f"{self.url.human_repr()}: the connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and (await self._readline()).strip():
            raise BodyError(f"{self.url.human_repr()}: a chunk is not followed by CRLF")
        return data

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``n`` bytes, as they arrive."""
        if self._body is not None:
            for start in range(0, len(self._body), n):
                yield self._body[start:start + n]
            return
        while True:
            data = await self._next(n)
            if not data:
                self.release()
                return
            yield data

    async def read(self) -> bytes:
        """The whole body (kept: a second call returns it again)."""
        if self._body is None:
            parts = [data async for data in self.iter_chunked(1 << 20)]
            self._body = b"".join(parts)
        return self._body

    async def json(self) -> Any:
        return json.loads(await self.read())

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to its end, else close it."""
        if self._released:
            return
        self._released = True
        self._client._give_back(self._conn, reusable=self._done and self._keep_alive)


def _head_lines(method: str, url: URL, headers: Mapping[str, str], body: RequestBody,
                user_agent: str) -> tuple[bytes, bool]:
    """The request head, and whether the body goes out chunked."""
    target = url.raw_path_qs or "/"
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.port is not None and url.port != _DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{url.port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    given = {name.lower() for name in headers}
    chunked = False
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {user_agent}")
    if "accept" not in given:
        lines.append("Accept: */*")
    if "content-length" not in given and "transfer-encoding" not in given:
        if isinstance(body, bytes | bytearray | memoryview):
            lines.append(f"Content-Length: {len(body)}")
        elif body is not None:
            lines.append("Transfer-Encoding: chunked")
            chunked = True
        elif method in _BODY_METHODS:
            lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), chunked


class HTTPClient:
    """A pool of HTTP/1.1 connections to any number of origins; one per event loop. See the module doc."""

    def __init__(self, *, limit_per_host: int = 16, connect_timeout: float = 30.0, read_timeout: float = 300.0,
                 keepalive: float = 15.0, user_agent: str = "lamina") -> None:
        self.limit_per_host = limit_per_host
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._open: set[_Connection] = set()
        self.connections_opened = 0  # tests and benchmarks read it (keep-alive at work)
        self.closed = False

    @staticmethod
    def _key(url: URL) -> tuple[str, str, int]:
        if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
            raise ValueError(f"cannot request {url.human_repr()}: only absolute http:// and https:// URLs")
        return url.scheme, url.raw_host, url.port or _DEFAULT_PORTS[url.scheme]

    async def request(self, method: str, url: URL, *, headers: Mapping[str, str] | None = None,
                      body: RequestBody = None, ssl_context: ssl.SSLContext | bool = True) -> Response:
        """Send one request and return the answer once its head has arrived; call ``release()`` when done."""
        if self.closed:
            raise ConnectError("the HTTP client is closed")
        key = self._key(url)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.limit_per_host)
        await slots.acquire()
        try:
            head, chunked = _head_lines(method, url, headers or {}, body, self.user_agent)
            resendable = body is None or isinstance(body, bytes | bytearray | memoryview)
            for _ in range(2):
                conn = await self._connection(key, url, ssl_context)
                try:
                    return await self._exchange(conn, method, url, head, body, chunked)
                except _StaleConnection as stale:
                    self._discard(conn)
                    if not (conn.reused and resendable):
                        raise ConnectError(str(stale)) from None
                except BaseException:
                    self._discard(conn)
                    raise
            raise ConnectError(f"{method} {url.human_repr()}: the server closed two connections without answering")
        except BaseException:
            slots.release()
            raise

    async def _connection(self, key: tuple[str, str, int], url: URL, ssl_context: ssl.SSLContext | bool) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable(self.keepalive):
                conn.reused = True
                return conn
            self._discard(conn)
        context: ssl.SSLContext | None = None
        if key[0] == "https":
            context = ssl_context if isinstance(ssl_context, ssl.SSLContext) else default_ssl_context()
        host, port = key[1], key[2]
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=_MAX_LINE)
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or exc.reason or str(exc)
            raise TLSError(f"{url.human_repr()}: {reason}", certificate=True, reason=str(reason)) from None
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            raise TLSError(f"{url.human_repr()}: {reason}", certificate=False, reason=str(reason)) from None
        except TimeoutError:
            raise ConnectError(f"cannot connect to {host}:{port}: no answer within {self.connect_timeout:g} s"
                               ) from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self.connections_opened += 1
        conn = _Connection(key, reader, writer)
        self._open.add(conn)
        return conn

    async def _exchange(self, conn: _Connection, method: str, url: URL, head: bytes, body: RequestBody,
                        chunked: bool) -> Response:
        writer = conn.writer
        try:
            if isinstance(body, bytes | bytearray | memoryview) and len(body) <= 1 << 16:
                writer.write(head + bytes(body))
            else:
                writer.write(head)
                if isinstance(body, bytes | bytearray | memoryview):
                    writer.write(body)
                elif body is not None:
                    async for piece in body:
                        if piece:
                            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                            await writer.drain()
                    if chunked:
                        writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise _StaleConnection(f"{method} {url.human_repr()}: the connection broke while sending: "
                                   f"{exc.strerror or exc}") from None
        except OSError as exc:
            raise ConnectError(f"{method} {url.human_repr()}: sending failed: {exc.strerror or exc}") from None
        return await self._read_head(conn, method, url)

    async def _read_head(self, conn: _Connection, method: str, url: URL) -> Response:
        reader, total = conn.reader, 0
        while True:
            try:
                async with asyncio.timeout(self.read_timeout):
                    status_line = await reader.readuntil(b"\n")
                    lines: list[bytes] = []
                    while True:
                        line = await reader.readuntil(b"\n")
                        total += len(line)
                        if total > _MAX_HEADERS:
                            raise ProtocolError(f"{method} {url.human_repr()}: answer head over {_MAX_HEADERS} bytes")
                        if line in (b"\r\n", b"\n"):
                            break
                        lines.append(line)
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and total == 0:
                    raise _StaleConnection(f"{method} {url.human_repr()}: the server closed the connection "
                                           "without answering") from None
                raise ConnectError(f"{method} {url.human_repr()}: the connection closed inside the answer head"
                                   ) from None
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"{method} {url.human_repr()}: a header line over {_MAX_LINE} bytes") from None
            except TimeoutError:
                raise ConnectError(f"{method} {url.human_repr()}: no answer for {self.read_timeout:g} s") from None
            except ConnectionResetError as exc:
                raise _StaleConnection(f"{method} {url.human_repr()}: {exc.strerror or exc}") from None
            except OSError as exc:
                raise ConnectError(f"{method} {url.human_repr()}: {exc.strerror or exc}") from None
            version, status, reason = _status(status_line, method, url)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            fields = [_field(line, method, url) for line in lines]
            headers = Headers(fields)
            connection = headers.get("Connection", "").lower()
            keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
            return Response(self, conn, method, url, status, reason, headers, keep_alive, self.read_timeout)

    def _give_back(self, conn: _Connection, reusable: bool) -> None:
        slots = self._slots.get(conn.key)
        if slots is not None:
            slots.release()
        if reusable and not self.closed and not conn.writer.is_closing():
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        self._open.discard(conn)
        conn.close()

    async def close(self) -> None:
        """Close every connection, idle or in use; later requests fail."""
        self.closed = True
        conns, self._open = list(self._open), set()
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError, ssl.SSLError):
                await conn.writer.wait_closed()


class _StaleConnection(ConnectError):
    """A connection that was closed before it carried this request's answer."""


def _status(line: bytes, method: str, url: URL) -> tuple[str, int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise ProtocolError(f"{method} {url.human_repr()}: not an HTTP/1.x answer: {line[:60]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


def _field(line: bytes, method: str, url: URL) -> tuple[str, str]:
    name, sep, value = line.decode("latin-1").partition(":")
    if not sep or not name or name != name.strip():
        raise ProtocolError(f"{method} {url.human_repr()}: malformed header line {line[:60]!r}")
    return name, value.strip()

"""lamina's HTTP/1.1 client (``lamina.client.http11``) against real servers on 127.0.0.1: aiohttp apps and raw
asyncio servers that answer byte for byte what a test needs (chunked bodies with trailers, bodies ended by
closing, interim 100 answers, idle connections closed by the server, cut-off bodies, silence, garbage),
and the proxy rule: an origin behind ``HTTP_PROXY`` goes through aiohttp, every other one through http11."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from client_peers import ServeApp

from lamina.client import RegistryClient, RegistryError, RegistryUnreachable, RetryPolicy, TransferInterrupted, http11
from lamina.client.http11 import BodyError, ConnectError, HTTPClient, ProtocolError
from lamina.client.urls import URL

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _raw(handler: Handler) -> tuple[asyncio.Server, URL]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, URL(f"http://127.0.0.1:{port}")


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return lines[0].encode(), headers


@pytest.fixture
async def client() -> AsyncIterator[HTTPClient]:
    c = HTTPClient(read_timeout=5)
    yield c
    await c.close()


async def test_keep_alive_reuses_one_connection_and_no_tls_context(
    serve_app: ServeApp, client: HTTPClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http11, "_default_context", None)  # an earlier test's https request may have made it

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100_000, headers={"X-Twice": "a"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    url = URL(f"http://{await serve_app(app)}/hello")
    for _ in range(3):
        resp = await client.request("GET", url)
        assert resp.status == 200 and resp.headers["x-twice"] == "a" and "X-TWICE" in resp.headers
        assert await resp.read() == b"x" * 100_000
        resp.release()
    assert client.connections_opened == 1
    assert http11._default_context is None  # plain HTTP never builds a TLS context


async def test_chunked_body_with_extensions_and_trailers_then_reuse(client: HTTPClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
            await writer.drain()
        writer.close()

    server, url = await _raw(handle)
    async with server:
        for _ in range(2):
            resp = await client.request("GET", url.join(URL("c")))
            assert [piece async for piece in resp.iter_chunked(3)] == [b"hel", b"lo", b" wo", b"rld"]
        assert client.connections_opened == 1


async def test_body_until_close_interim_100_and_bodiless_answers(client: HTTPClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request, _ = await _read_request(reader)
        except asyncio.IncompleteReadError:
            return
        if request.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")  # HEAD: a length, no body
            await writer.drain()
            try:
                request, _ = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
        await writer.drain()
        writer.close()

    server, url = await _raw(handle)
    async with server:
        head = await client.request("HEAD", url)
        assert head.headers["Content-Length"] == "1234" and await head.read() == b""
        head.release()
        empty = await client.request("DELETE", url)
        assert empty.status == 204 and await empty.read() == b""
        empty.release()
        resp = await client.request("GET", url)
        assert resp.status == 200 and await resp.read() == b"until close"
        resp.release()
        assert client.connections_opened == 1
        again = await client.request("HEAD", url)  # the close-delimited answer left no connection to reuse
        again.release()
        assert client.connections_opened == 2


async def test_a_reused_connection_closed_by_the_server_is_retried_once_on_a_new_one(client: HTTPClient) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request, headers = await _read_request(reader)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen.append(request + b" " + body)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        try:  # the next request on this connection is read, never answered
            _, headers = await _read_request(reader)
            await reader.readexactly(int(headers.get("content-length", "0")))
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server, url = await _raw(handle)
    async with server:
        for body in (b"first", b"second"):
            resp = await client.request("PUT", url.join(URL("x")), body=body)
            assert resp.status == 201 and await resp.read() == b"ok"
            resp.release()
        assert [s.split(b" ")[-1] for s in seen] == [b"first", b"second"]
        assert client.connections_opened == 2

        async def stream() -> AsyncIterator[bytes]:
            yield b"cannot be sent twice"

        with pytest.raises(ConnectError, match="without answering"):
            await client.request("PUT", url.join(URL("y")), body=stream(), headers={"Content-Length": "20"})


async def test_cut_off_body_silence_and_garbage_raise_one_line_errors() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request, _ = await _read_request(reader)
        if b"/short" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 40)
        elif b"/garbage" in request:
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        else:
            await asyncio.sleep(2)  # /silent: says nothing
        await writer.drain()
        writer.close()

    server, url = await _raw(handle)
    client = HTTPClient(read_timeout=0.3)
    async with server:
        resp = await client.request("GET", url.join(URL("short")))
        with pytest.raises(BodyError, match="60 bytes before the end"):
            await resp.read()
        resp.release()
        with pytest.raises(ProtocolError, match=r"not an HTTP/1\.x answer"):
            await client.request("GET", url.join(URL("garbage")))
        with pytest.raises(ConnectError, match=r"no answer for 0\.3 s"):
            await client.request("GET", url.join(URL("silent")))
    await client.close()
    with pytest.raises(ConnectError, match="closed"):
        await client.request("GET", url)


async def test_streamed_upload_without_length_goes_chunked(serve_app: ServeApp, client: HTTPClient) -> None:
    async def echo(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response({"n": len(data), "te": request.headers.get("Transfer-Encoding"),
                                  "ua": request.headers.get("User-Agent")})

    app = web.Application()
    app.router.add_post("/up", echo)
    url = URL(f"http://{await serve_app(app)}/up")

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 70_000

    resp = await client.request("POST", url, body=pieces())
    assert await resp.json() == {"n": 350_000, "te": "chunked", "ua": "lamina"}
    resp.release()
    resp = await client.request("POST", url)  # no body: Content-Length 0
    assert (await resp.json())["n"] == 0
    resp.release()


async def test_at_most_limit_per_host_requests_in_flight(serve_app: ServeApp) -> None:
    active, peak = 0, 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    url = URL(f"http://{await serve_app(app)}/slow")
    client = HTTPClient(limit_per_host=2)

    async def one() -> bytes:
        resp = await client.request("GET", url)
        try:
            return await resp.read()
        finally:
            resp.release()

    assert await asyncio.gather(*(one() for _ in range(6))) == [b"done"] * 6
    assert peak == 2 and client.connections_opened == 2
    await client.close()


async def test_transport_maps_failures_to_registry_errors() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request, _ = await _read_request(reader)
        if b"/blobs/" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"z" * 10)
        else:
            writer.write(b"HTTP/1.1 2xx nonsense\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _raw(handle)
    async with server, RegistryClient(f"{url.host}:{url.port}", retry=RetryPolicy(attempts=2, base_delay=0.01)) as c:
        with pytest.raises(RegistryError, match=r"not an HTTP/1\.x answer"):
            await c.ping()
        with pytest.raises(TransferInterrupted, match="before the end of the body"):
            await c.fetch_blob("a/b", "sha256:" + "0" * 64)
    async with RegistryClient(f"127.0.0.1:{url.port}", retry=RetryPolicy(attempts=2, base_delay=0.01)) as c:
        with pytest.raises(RegistryUnreachable, match="failed after 2 attempt"):
            await c.ping()  # the server is gone: refused twice


async def test_an_origin_behind_http_proxy_goes_through_aiohttp(serve_app: ServeApp,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        asked.append(str(request.url))  # absolute-form target: a forward proxy's request
        return web.Response(text="{}", content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    proxy_host = await serve_app(app)
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy_host}")
    monkeypatch.setenv("NO_PROXY", "")
    async with RegistryClient("registry.invalid:5000", insecure=True) as c:
        await c.ping()
        assert c.transport._aiohttp is not None and c.transport._http is None
    assert asked == ["http://registry.invalid:5000/v2/"]
    monkeypatch.setenv("NO_PROXY", "registry.invalid")
    async with RegistryClient("registry.invalid:5000", insecure=True,
                              retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(RegistryUnreachable):  # not proxied: our client, which cannot resolve the name
            await c.ping()
        assert c.transport._aiohttp is None and c.transport._http is not None

"""Helpers for the limits tests: a real ``lamina registry serve`` per test, an HTTP client bound to it,
and a raw loopback socket for what an HTTP client library will not do (trickle bytes, send nothing)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from helpers.registries import RegistryProcess, start_lamina


@contextlib.contextmanager
def lamina(tmp_path: Path, config: str = "", workers: int = 1) -> Iterator[RegistryProcess]:
    """A real server whose settings file is ``config`` (fast SQLite: these tests measure limits, not fsync)."""
    server = start_lamina(tmp_path / "registry", config='sqlite_synchronous = "OFF"\n' + config, workers=workers)
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def http(server: RegistryProcess, headers: dict[str, str] | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(server.url, connector=connector, headers=headers) as session:
        yield session


async def spec_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The first entry of a spec error body (asserting the registry's JSON error shape)."""
    assert response.content_type == "application/json", response.content_type
    body = await response.json()
    assert set(body) == {"errors"}, body
    entry: dict[str, Any] = body["errors"][0]
    assert {"code", "message"} <= set(entry), entry
    return entry


def raw_socket(server: RegistryProcess, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; (bytes, when it closed: monotonic)."""
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, time.monotonic()
        if not chunk:
            return received, time.monotonic()
        received += chunk
    raise AssertionError(f"the server did not close the connection in time; it sent {received[:300]!r}")


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """One raw response with a Content-Length, read as soon as it is complete."""
    deadline = time.monotonic() + timeout
    received = b""
    while time.monotonic() < deadline:
        _head, sep, rest = received.partition(b"\r\n\r\n")
        if sep:
            _, headers, _ = parse_response(received)
            if len(rest) >= int(headers.get("content-length", "0")):
                return received
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    raise AssertionError(f"no complete response within {timeout} s; got {received[:300]!r}")


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one raw HTTP/1.1 response with a Content-Length."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return status, headers, rest[:length]


def error_code_of(body: bytes) -> str:
    doc = json.loads(body)
    assert set(doc) == {"errors"}, doc
    return str(doc["errors"][0]["code"])

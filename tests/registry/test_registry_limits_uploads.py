"""Upload limits against real ``lamina registry serve`` processes (issue 11): the maximum blob size on every
way a body arrives, and the open upload sessions per repository and per user (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from limittools import http, lamina, parse_response, raw_socket, read_response, spec_error

from lamina.registry.config import ConfigError, load_config

MiB = 1 << 20


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _session_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "uploads").iterdir())


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def test_a_declared_size_over_the_default_maximum_is_refused_before_any_byte_is_sent(tmp_path: Path) -> None:
    """Default max_blob_bytes (10 GiB): an 11 GiB monolithic POST gets 413 at once, from its headers alone,
    and no session is left behind."""
    with lamina(tmp_path) as server:
        sock = raw_socket(server)
        with sock:
            digest = _digest(b"never sent")
            sock.sendall(
                f"POST /v2/big/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {server.host}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {11 << 30}\r\n\r\n".encode()
            )
            started = time.monotonic()
            raw = read_response(sock, 5)
            assert time.monotonic() - started < 2
        status, headers, body = parse_response(raw)
        assert status == 413, raw[:400]
        assert headers["connection"] == "close"
        assert b'"SIZE_INVALID"' in body and b"limits.max_blob_bytes" in body
        assert _session_dirs(server.root) == []


async def test_max_blob_bytes_on_monolithic_chunked_and_final_put(tmp_path: Path) -> None:
    """max_blob_bytes = 1 MiB: refused from Content-Length, from Content-Range, and from the bytes of a body
    without a length once they pass it; the session keeps what it had and still finishes."""
    with lamina(tmp_path, f"[limits]\nmax_blob_bytes = {MiB}\n") as server:
        async with http(server) as client:
            big = b"b" * (MiB + 1)
            response = await client.post("/v2/app/blobs/uploads/", params={"digest": _digest(big)}, data=big)
            assert response.status == 413
            entry = await spec_error(response)
            assert entry["code"] == "SIZE_INVALID" and entry["detail"]["max_blob_bytes"] == MiB
            # a monolithic POST streamed without Content-Length: cut when the bytes pass the maximum
            response = await client.post("/v2/app/blobs/uploads/", params={"digest": _digest(big)}, data=_chunks(big))
            assert response.status == 413 and (await spec_error(response))["code"] == "SIZE_INVALID"

            response = await client.post("/v2/app/blobs/uploads/")
            assert response.status == 202
            location = response.headers["Location"]
            first = b"a" * (MiB - 10)
            response = await client.patch(location, data=first, headers={"Content-Range": f"0-{len(first) - 1}"})
            assert response.status == 202
            # Content-Range past the maximum: refused from the header
            response = await client.patch(
                location, data=b"x" * 20, headers={"Content-Range": f"{len(first)}-{len(first) + 19}"}
            )
            assert response.status == 413 and (await spec_error(response))["code"] == "SIZE_INVALID"
            # a chunk without any length, growing past the maximum: refused as its bytes arrive, nothing kept
            response = await client.patch(location, data=_chunks(b"y" * 64))
            assert response.status == 413
            response = await client.get(location)
            assert response.status == 204 and response.headers["Range"] == f"0-{len(first) - 1}"
            # the final PUT with a body past the maximum: refused; then the session still completes
            blob = first + b"z" * 10
            response = await client.put(location, params={"digest": _digest(first + b"z" * 30)}, data=b"z" * 30)
            assert response.status == 413
            response = await client.put(location, params={"digest": _digest(blob)}, data=b"z" * 10)
            assert response.status == 201, await response.text()
            response = await client.get(f"/v2/app/blobs/{_digest(blob)}")
            assert await response.read() == blob
        assert _session_dirs(server.root) == []


async def test_sessions_per_repository_hold_across_workers_and_free_up_on_cancel(tmp_path: Path) -> None:
    """Two worker processes, 40 concurrent POSTs, a limit of 10: exactly 10 sessions open (counted and
    created in one transaction), the rest 429 TOOMANYREQUESTS with Retry-After; a cancel frees a place."""
    config = "[limits]\nupload_sessions_per_repository = 10\n"
    with lamina(tmp_path, config, workers=2) as server:
        async with http(server) as client:
            responses = await asyncio.gather(*(client.post("/v2/team/app/blobs/uploads/") for _ in range(40)))
            accepted = [r for r in responses if r.status == 202]
            refused = [r for r in responses if r.status != 202]
            assert len(accepted) == 10
            assert {r.status for r in refused} == {429}
            entry = await spec_error(refused[0])
            assert entry["code"] == "TOOMANYREQUESTS" and "limits.upload_sessions_per_repository" in entry["message"]
            assert 1 <= int(refused[0].headers["Retry-After"]) <= 60
            assert len(_session_dirs(server.root)) == 10
            # another repository is not affected; a cancelled session frees its place
            assert (await client.post("/v2/team/other/blobs/uploads/")).status == 202
            assert (await client.delete(accepted[0].headers["Location"])).status == 204
            assert (await client.post("/v2/team/app/blobs/uploads/")).status == 202
            assert (await client.post("/v2/team/app/blobs/uploads/")).status == 429


async def test_one_user_opening_1000_sessions_gets_the_default_128(tmp_path: Path) -> None:
    """Issue 11: 1,000 upload sessions opened in one repository by one user were all accepted. With the
    defaults, 128 open and the other 872 get 429 with Retry-After; another user still gets sessions."""
    htpasswd = tmp_path / "htpasswd"
    hashes = {u: bcrypt.hashpw(f"{u}-pw".encode(), bcrypt.gensalt(rounds=4)).decode() for u in ("ci", "dev")}
    htpasswd.write_text("".join(f"{user}:{hashed}\n" for user, hashed in hashes.items()))
    config = (
        f'[auth]\nhtpasswd = "{htpasswd}"\n[[auth.rules]]\nrepositories = ["**"]\nusers = ["*"]\n'
        'actions = ["pull", "push"]\n'
    )

    def basic(user: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{user}-pw".encode()).decode()}

    with lamina(tmp_path, config) as server:
        async with http(server, basic("ci")) as client:
            statuses: list[int] = []
            retry_after: set[str] = set()

            async def open_session() -> None:
                response = await client.post("/v2/ci/cache/blobs/uploads/")
                statuses.append(response.status)
                if response.status == 429:
                    retry_after.add(response.headers.get("Retry-After", "missing"))
                    assert (await spec_error(response))["code"] == "TOOMANYREQUESTS"
                response.release()

            for _ in range(0, 1000, 50):
                await asyncio.gather(*(open_session() for _ in range(50)))
            assert statuses.count(202) == 128 and statuses.count(429) == 872
            assert retry_after and all(1 <= int(value) <= 60 for value in retry_after)
            response = await client.post("/v2/ci/other/blobs/uploads/")  # the user is full in every repository
            assert response.status == 429
            assert "user ci" in (await spec_error(response))["message"]
        async with http(server, basic("dev")) as other:
            assert (await other.post("/v2/ci/cache/blobs/uploads/")).status == 202
        assert len(_session_dirs(server.root)) == 129


async def test_abandoned_sessions_stop_counting_and_are_swept(tmp_path: Path) -> None:
    """upload_expiry_seconds = 2: sessions idle for two seconds no longer count against the limit, and the
    janitor removes their directory and row."""
    config = "upload_expiry_seconds = 2\n[limits]\nupload_sessions_per_repository = 3\n"
    with lamina(tmp_path, config) as server:
        async with http(server) as client:
            first = [await client.post("/v2/app/blobs/uploads/") for _ in range(3)]
            assert [r.status for r in first] == [202, 202, 202]
            assert (await client.post("/v2/app/blobs/uploads/")).status == 429
            abandoned = {r.headers["Docker-Upload-UUID"] for r in first}
            assert abandoned <= set(_session_dirs(server.root))
            await asyncio.sleep(2.2)
            fresh = await client.post("/v2/app/blobs/uploads/")
            assert fresh.status == 202
            deadline = time.monotonic() + 10
            while abandoned & set(_session_dirs(server.root)) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert not abandoned & set(_session_dirs(server.root))  # the janitor (every 1 s here) removed them
            response = await client.get(first[0].headers["Location"])
            assert response.status == 404 and (await spec_error(response))["code"] == "BLOB_UPLOAD_UNKNOWN"


async def test_a_session_still_receiving_a_long_chunk_is_not_expired(tmp_path: Path) -> None:
    """A PATCH streaming for longer than upload_expiry_seconds keeps its session: the janitor sees its
    data being written (the session row is updated only when the request ends)."""
    config = "upload_expiry_seconds = 1\n[limits]\nbody_timeout_seconds = 5\nbody_min_bytes_per_second = 1\n"
    with lamina(tmp_path, config) as server:
        async with http(server) as client:
            response = await client.post("/v2/app/blobs/uploads/")
            location = response.headers["Location"]

            async def slow() -> AsyncIterator[bytes]:
                for _ in range(12):
                    yield b"s" * 1000
                    await asyncio.sleep(0.25)

            response = await client.patch(location, data=slow())
            assert response.status == 202, await response.text()
            blob = b"s" * 12_000
            response = await client.put(location, params={"digest": _digest(blob)})
            assert response.status == 201, await response.text()


def test_bad_limits_are_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    for text, expected in (
        ("[limits]\nmax_blob_bytes = 0\n", "limits.max_blob_bytes: expected an integer >= 1, got 0"),
        ("[limits]\nupload_sessions_per_usr = 3\n", "limits: unknown setting 'upload_sessions_per_usr'"),
        ("[limits]\ntags_page_size = 20\ntags_max_page_size = 10\n", "limits.tags_page_size: 20 is above"),
        ("[limits]\nidle_timeout_seconds = -1\n", "limits.idle_timeout_seconds: expected a positive number"),
        ("limits = 3\n", "limits: expected a table of settings, got 3"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(bad)
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    bad.write_text("[limits]\nmax_blob_bytes = 5\nbody_min_bytes_per_second = 0\n")
    limits = load_config(bad).limits
    assert (limits.max_blob_bytes, limits.body_min_bytes_per_second, limits.tags_page_size) == (5, 0, 1000)

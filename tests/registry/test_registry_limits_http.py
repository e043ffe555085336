"""Page sizes and slow-client timeouts against real ``lamina registry serve`` processes (issue 11).

Listings: a default page size and a maximum ``n`` for the catalog, tags and referrers (``n`` above it is
PAGINATION_NUMBER_INVALID, as CNCF distribution answers). Timeouts: raw loopback sockets that send
nothing, trickle a request head, or trickle or stall a blob body."""

from __future__ import annotations

import asyncio
import hashlib
import json
import select
import time
from pathlib import Path
from typing import Any

import aiohttp
from limittools import (
    error_code_of,
    http,
    lamina,
    parse_response,
    raw_socket,
    read_response,
    read_until_closed,
    spec_error,
)

from lamina.client import RegistryClient
from lamina.oci import mediatypes as mt


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _blob(client: aiohttp.ClientSession, name: str, data: bytes) -> dict[str, Any]:
    response = await client.post(f"/v2/{name}/blobs/uploads/", params={"digest": _digest(data)}, data=data)
    assert response.status == 201, await response.text()
    return {"digest": _digest(data), "size": len(data)}


async def _manifest(
    client: aiohttp.ClientSession, name: str, reference: str | None, *, blobs: bool = True, **fields: Any
) -> str:
    """Push an image manifest (and its two blobs unless ``blobs`` is false: already pushed)."""
    config = await _blob(client, name, b"{}") if blobs else {"digest": _digest(b"{}"), "size": 2}
    layer = await _blob(client, name, b"layer") if blobs else {"digest": _digest(b"layer"), "size": 5}
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, **config},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, **layer}],
        **fields,
    }
    body = json.dumps(doc).encode()
    response = await client.put(
        f"/v2/{name}/manifests/{reference or _digest(body)}", data=body, headers={"Content-Type": mt.OCI_MANIFEST}
    )
    assert response.status == 201, await response.text()
    return _digest(body)


async def _in_batches(jobs: list[Any], size: int = 16) -> None:
    for start in range(0, len(jobs), size):
        await asyncio.gather(*jobs[start:start + size])


async def _walk(client: aiohttp.ClientSession, url: str, key: str) -> tuple[list[Any], list[int]]:
    """Follow the Link headers from ``url``; (every entry, the size of each page)."""
    entries: list[Any] = []
    sizes: list[int] = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        assert response.status == 200, await response.text()
        page = (await response.json(content_type=None))[key]
        entries += page
        sizes.append(len(page))
        link = response.headers.get("Link")
        next_url = link[link.index("<") + 1:link.index(">")] if link else None
    return entries, sizes


async def test_default_page_sizes_and_maximum_n(tmp_path: Path) -> None:
    """Issue 11: no default page size for tags and referrers (a repository's 1,001 tags came in one
    answer). Defaults: tags and referrers 1000 a page, the catalog 100; n above the maximum is refused."""
    with lamina(tmp_path) as server:
        async with http(server) as client:
            subject = await _manifest(client, "app", "v0")
            body = await (await client.get("/v2/app/manifests/v0")).read()
            tag_jobs = [
                client.put(f"/v2/app/manifests/t{i:04d}", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
                for i in range(1000)
            ]
            await _in_batches(tag_jobs)
            referrer_jobs = [
                _manifest(client, "app", None, blobs=False,
                          subject={"mediaType": mt.OCI_MANIFEST, "digest": subject, "size": len(body)},
                          artifactType="application/vnd.test+json", annotations={"i": str(i)})
                for i in range(1001)
            ]
            await _in_batches(referrer_jobs)
            await _in_batches([_blob(client, f"repo/r{i:03d}", b"x") for i in range(100)])

            tags, sizes = await _walk(client, "/v2/app/tags/list", "tags")
            assert sizes == [1000, 1] and len(set(tags)) == 1001
            found, sizes = await _walk(client, f"/v2/app/referrers/{subject}", "manifests")
            assert sizes == [1000, 1] and len({m["digest"] for m in found}) == 1001
            repositories, sizes = await _walk(client, "/v2/_catalog", "repositories")
            assert sizes == [100, 1] and len(repositories) == 101

            for url, maximum in (("/v2/app/tags/list", 10_000), (f"/v2/app/referrers/{subject}", 10_000),
                                 ("/v2/_catalog", 1000)):
                response = await client.get(url, params={"n": str(maximum + 1)})
                assert response.status == 400
                entry = await spec_error(response)
                assert entry["code"] == "PAGINATION_NUMBER_INVALID" and "_max_page_size" in entry["message"]
                assert (await client.get(url, params={"n": str(maximum)})).status == 200


async def test_page_size_settings_are_honoured_and_links_keep_the_filter(tmp_path: Path) -> None:
    config = (
        "[limits]\ncatalog_page_size = 2\ncatalog_max_page_size = 3\ntags_page_size = 2\ntags_max_page_size = 3\n"
        "referrers_page_size = 2\nreferrers_max_page_size = 3\n"
    )
    with lamina(tmp_path, config) as server:
        async with http(server) as client:
            subject = await _manifest(client, "team/app", "a")
            for tag in ("b", "c", "d", "e"):
                await _manifest(client, "team/app", tag)
            size = len(await (await client.get("/v2/team/app/manifests/a")).read())
            pointer = {"mediaType": mt.OCI_MANIFEST, "digest": subject, "size": size}
            for i in range(3):
                await _manifest(client, "team/app", None, subject=pointer, artifactType="application/x+json",
                                annotations={"i": str(i)})
            await _manifest(client, "team/app", None, subject=pointer, artifactType="application/other")
            for name in ("team/b", "team/c", "team/d"):
                await _blob(client, name, b"x")

            tags, sizes = await _walk(client, "/v2/team/app/tags/list", "tags")
            assert tags == ["a", "b", "c", "d", "e"] and sizes == [2, 2, 1]
            tags, sizes = await _walk(client, "/v2/team/app/tags/list?n=3", "tags")
            assert sizes == [3, 2]
            repositories, sizes = await _walk(client, "/v2/_catalog", "repositories")
            assert repositories == ["team/app", "team/b", "team/c", "team/d"] and sizes == [2, 2]
            everything, sizes = await _walk(client, f"/v2/team/app/referrers/{subject}", "manifests")
            assert len(everything) == 4 and sizes == [2, 2]
            # a raw "+" in the filter, and the Link keeps the filter on the next page
            filtered, sizes = await _walk(
                client, f"/v2/team/app/referrers/{subject}?artifactType=application/x+json", "manifests"
            )
            assert sizes == [2, 1] and {m["artifactType"] for m in filtered} == {"application/x+json"}
            response = await client.get("/v2/team/app/tags/list", params={"n": "4"})
            assert response.status == 400 and (await spec_error(response))["code"] == "PAGINATION_NUMBER_INVALID"
        # lamina's own client follows the pages: every referrer, filtered or not
        async with RegistryClient(server.host) as lamina_client:
            assert len((await lamina_client.referrers("team/app", subject)).manifests) == 4
            only = await lamina_client.referrers("team/app", subject, artifact_type="application/x+json")
            assert len(only.manifests) == 3
            assert len(await lamina_client.list_tags("team/app")) == 5


def test_idle_and_trickling_connections_are_closed(tmp_path: Path) -> None:
    """limits.idle_timeout_seconds = 1: a connection that sends nothing, one that trickles a request
    head a byte at a time, and a kept-alive connection after its answer are all closed after ~1 s."""
    with lamina(tmp_path, "[limits]\nidle_timeout_seconds = 1\n") as server:
        with raw_socket(server) as silent:
            opened = time.monotonic()
            raw, closed = read_until_closed(silent, opened + 8)
            assert raw == b"" and 0.8 <= closed - opened < 4

        with raw_socket(server) as trickle:
            opened = time.monotonic()
            head = f"GET /v2/ HTTP/1.1\r\nHost: {server.host}\r\nUser-Agent: slowloris\r\n".encode()
            sent = 0
            try:
                for byte in head:
                    trickle.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            raw, closed = read_until_closed(trickle, time.monotonic() + 8)
            assert sent < len(head) and b"200" not in raw and closed - opened < 4

        with raw_socket(server) as kept:
            kept.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
            answered = time.monotonic()
            raw, closed = read_until_closed(kept, answered + 8)
            assert parse_response(raw)[0] == 200 and 0.8 <= closed - answered < 4


def _send_slowly(
    server: Any, location: str, pieces: list[bytes], pause: float, declared: int, method: str = "PATCH",
    content_type: str = "application/octet-stream",
) -> tuple[bytes, float]:
    """A raw request declaring ``declared`` body bytes that sends ``pieces`` with ``pause`` between them
    until the server answers; (the answer, seconds from the request head to the answer)."""
    with raw_socket(server) as sock:
        sock.sendall(
            f"{method} {location} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        started = time.monotonic()
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered
            sock.sendall(piece)
            time.sleep(pause)
        raw = read_response(sock, 10)
        return raw, time.monotonic() - started


async def test_slow_and_stalled_bodies_are_cut_and_the_session_survives(tmp_path: Path) -> None:
    """limits.body_timeout_seconds = 1, body_min_bytes_per_second = 1000: a body trickled at ~100 bytes/s
    and one that stalls after 2 KB get 408 BLOB_UPLOAD_INVALID and a closed connection within a few
    seconds; the session keeps none of those bytes and a normal chunk then completes it. A trickled
    manifest PUT gets 408 MANIFEST_INVALID."""
    config = "[limits]\nbody_timeout_seconds = 1\nbody_min_bytes_per_second = 1000\n"
    with lamina(tmp_path, config) as server:
        async with http(server) as client:
            response = await client.post("/v2/app/blobs/uploads/")
            location = response.headers["Location"]
            loop = asyncio.get_running_loop()
            for pieces, pause in (([b"t" * 10] * 60, 0.1), ([b"s" * 2048], 0.0)):
                raw, elapsed = await loop.run_in_executor(None, _send_slowly, server, location, pieces, pause, 100_000)
                status, headers, body = parse_response(raw)
                assert status == 408 and headers["connection"] == "close", raw[:300]
                assert error_code_of(body) == "BLOB_UPLOAD_INVALID" and b"body_min_bytes_per_second" in body
                assert 0.9 <= elapsed < 4  # at most two windows of waiting
                response = await client.get(location)
                assert response.status == 204 and response.headers["Range"] == "0-0"
            blob = b"fast" * 1000
            response = await client.patch(location, data=blob, headers={"Content-Range": f"0-{len(blob) - 1}"})
            assert response.status == 202
            response = await client.put(location, params={"digest": _digest(blob)})
            assert response.status == 201, await response.text()
            # a manifest body trickled the same way: 408 MANIFEST_INVALID, nothing stored
            pieces = [b'{"schemaVersion"'[i:i + 2] for i in range(0, 16, 2)] * 8
            raw, elapsed = await loop.run_in_executor(
                None, _send_slowly, server, "/v2/app/manifests/slow", pieces, 0.2, 4000, "PUT", mt.OCI_MANIFEST
            )
            status, headers, body = parse_response(raw)
            assert status == 408 and headers["connection"] == "close" and error_code_of(body) == "MANIFEST_INVALID"
            assert 0.9 <= elapsed < 4
            assert (await client.get("/v2/app/manifests/slow")).status == 404

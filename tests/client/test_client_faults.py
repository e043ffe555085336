"""Faults a real registry never produces on demand, served by small aiohttp apps on 127.0.0.1: wrong bytes,
lying digests, 5xx/429 bursts, dropped connections, cross-origin redirects, upload restarts, pagination."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web
from client_peers import ServeApp

from helpers.registries import free_port
from lamina.client import (
    Credentials,
    DigestMismatch,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    RetryPolicy,
    TransferInterrupted,
)
from lamina.oci import digest_of

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
GOOD = b"the real content" * 100
GOOD_DIGEST = digest_of(GOOD)


def _blob_app(handler: web.Handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/v2/{repo:.+}/blobs/{digest}", handler)
    return app


async def test_wrong_blob_bytes_raise_and_leave_no_file(serve_app: ServeApp, tmp_path: Path) -> None:
    async def evil(request: web.Request) -> web.Response:
        return web.Response(body=b"tampered content" * 100)

    host = await serve_app(_blob_app(evil))
    out = tmp_path / "out"
    out.mkdir()
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        with pytest.raises(DigestMismatch) as info:
            await c.fetch_blob("r/x", GOOD_DIGEST)
        assert info.value.expected == str(GOOD_DIGEST) and host in str(info.value) and "r/x" in str(info.value)
        with pytest.raises(DigestMismatch):
            await c.download_blob("r/x", GOOD_DIGEST, out / "blob")
        with pytest.raises(DigestMismatch):
            async for _ in c.get_blob("r/x", GOOD_DIGEST):
                pass
    assert list(out.iterdir()) == []


def _manifest_app(body: bytes, header_digest: str | None, content_type: str = "application/json") -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        headers = {"Docker-Content-Digest": header_digest} if header_digest else {}
        return web.Response(body=body, headers=headers, content_type=content_type)

    app = web.Application()
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", handler)
    return app


MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'


async def test_manifest_by_digest_with_wrong_bytes(serve_app: ServeApp) -> None:
    host = await serve_app(_manifest_app(MANIFEST + b" ", None))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        with pytest.raises(DigestMismatch, match=f"manifest {digest_of(MANIFEST)}"):
            await c.get_manifest("r/x", str(digest_of(MANIFEST)))


async def test_manifest_by_tag_with_lying_header(serve_app: ServeApp) -> None:
    host = await serve_app(_manifest_app(MANIFEST, str(digest_of(b"something else"))))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        with pytest.raises(DigestMismatch, match="Docker-Content-Digest disagrees"):
            await c.get_manifest("r/x", "latest")


async def test_manifest_by_tag_without_header_gets_computed_digest_and_declared_type(serve_app: ServeApp) -> None:
    host = await serve_app(_manifest_app(MANIFEST, None, content_type="application/json"))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        fetched = await c.get_manifest("r/x", "latest")
    assert fetched.digest == digest_of(MANIFEST)
    assert fetched.media_type == "application/vnd.oci.image.index.v1+json"


async def test_5xx_and_429_are_retried(serve_app: ServeApp) -> None:
    answers = [web.Response(status=503), web.Response(status=429, headers={"Retry-After": "0"}),
               web.Response(status=502)]
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return answers.pop(0) if answers else web.Response(body=GOOD)

    host = await serve_app(_blob_app(flaky))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        assert await c.fetch_blob("r/x", GOOD_DIGEST) == GOOD
        assert c.stats.retries == 3
    assert calls == 4


async def test_501_is_not_retried_and_persistent_500_gives_up(serve_app: ServeApp) -> None:
    calls: list[str] = []

    async def broken(request: web.Request) -> web.Response:
        calls.append(request.match_info["repo"])
        status = 501 if request.match_info["repo"] == "r/unsupported" else 500
        return web.json_response({"errors": [{"code": "UNSUPPORTED", "message": "not here"}]}, status=status)

    host = await serve_app(_blob_app(broken))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        with pytest.raises(RegistryError) as info:
            await c.fetch_blob("r/unsupported", GOOD_DIGEST)
        assert info.value.status == 501 and info.value.code == "UNSUPPORTED" and "not here" in str(info.value)
        assert calls == ["r/unsupported"]
        with pytest.raises(RegistryError) as info:
            await c.head_blob("r/down", GOOD_DIGEST)
        assert info.value.status == 500
    assert calls.count("r/down") == FAST.attempts


async def test_connection_refused_is_unreachable() -> None:
    host = f"127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        with pytest.raises(RegistryUnreachable) as info:
            await c.ping()
    assert host in str(info.value) and "4 attempt(s)" in str(info.value)


async def test_download_broken_off_midway_is_retried(serve_app: ServeApp, tmp_path: Path) -> None:
    calls = 0

    async def dropper(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        resp = web.StreamResponse(headers={"Content-Length": str(len(GOOD))})
        await resp.prepare(request)
        if calls == 1:
            await resp.write(GOOD[:500])
            assert request.transport is not None
            request.transport.close()  # the connection dies halfway through the body
            return resp
        await resp.write(GOOD)
        await resp.write_eof()
        return resp

    host = await serve_app(_blob_app(dropper))
    dest = tmp_path / "blob"
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        assert await c.download_blob("r/x", GOOD_DIGEST, dest, size=len(GOOD)) == len(GOOD)
    assert dest.read_bytes() == GOOD and calls == 2
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]


async def test_redirect_to_another_origin_drops_authorization(serve_app: ServeApp) -> None:
    seen: list[str | None] = []

    async def storage(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=GOOD)

    storage_app = web.Application()
    storage_app.router.add_get("/bucket/{key}", storage)
    storage_host = await serve_app(storage_app)

    async def registry(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        seen.append(request.headers["Authorization"])
        raise web.HTTPTemporaryRedirect(f"http://{storage_host}/bucket/key?sig=a%2Fb")

    host = await serve_app(_blob_app(registry))
    async with RegistryClient(host, retry=FAST, credentials=Credentials("u", "p")) as c:
        assert await c.fetch_blob("r/x", GOOD_DIGEST) == GOOD
    assert seen[0] is not None and seen[0].startswith("Basic ")
    assert seen[1] is None


async def test_upload_follows_location_exactly_and_restarts_cleanly(serve_app: ServeApp) -> None:
    log: list[str] = []
    stored: dict[str, bytes] = {}

    async def blobs(request: web.Request) -> web.Response:
        log.append(f"{request.method} blob")
        if request.match_info["digest"] in stored:
            return web.Response(headers={"Content-Length": str(len(stored[request.match_info["digest"]]))})
        return web.Response(status=404)

    async def start(request: web.Request) -> web.Response:
        log.append("POST")
        n = sum(1 for entry in log if entry == "POST")
        return web.Response(status=202, headers={"Location": f"/upload/s{n}?_state=x%2By%3D%3D"})

    async def finish(request: web.Request) -> web.Response:
        body = await request.read()
        log.append(f"PUT {request.match_info['session']} {request.raw_path.split('?', 1)[1]}")
        if request.match_info["session"] == "s1":
            return web.Response(status=500)  # the first session breaks: the client must start over
        stored[request.query["digest"]] = body
        return web.Response(status=201, headers={"Docker-Content-Digest": request.query["digest"]})

    app = _blob_app(blobs)
    app.router.add_post("/v2/{repo:.+}/blobs/uploads/", start)
    app.router.add_put("/upload/{session}", finish)
    host = await serve_app(app)
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        await c.push_blob("r/x", GOOD_DIGEST, len(GOOD), GOOD)
    assert stored == {str(GOOD_DIGEST): GOOD}
    query = f"_state=x%2By%3D%3D&digest={GOOD_DIGEST}"
    assert log == ["HEAD blob", "POST", f"PUT s1 {query}", "POST", f"PUT s2 {query}"]


async def test_tag_list_link_pagination(serve_app: ServeApp) -> None:
    pages = {None: (["a", "b"], '</v2/r/x/tags/list?n=2&last=b>; rel="next"'), "b": (["c", "d"], None)}
    seen: list[str] = []

    async def tags(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        page, link = pages[request.query.get("last")]
        return web.json_response({"name": "r/x", "tags": page}, headers={"Link": link} if link else {})

    app = web.Application()
    app.router.add_get("/v2/{repo:.+}/tags/list", tags)
    host = await serve_app(app)
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        assert await c.list_tags("r/x", page_size=2) == ["a", "b", "c", "d"]
    assert seen == ["n=2", "n=2&last=b"]


async def test_concurrent_requests_share_one_token(serve_app: ServeApp) -> None:
    token_calls = 0

    async def token(request: web.Request) -> web.Response:
        nonlocal token_calls
        token_calls += 1
        await asyncio.sleep(0.05)
        return web.json_response({"token": "t0k", "expires_in": 300})

    realm_app = web.Application()
    realm_app.router.add_get("/token", token)
    realm = await serve_app(realm_app)

    async def blob(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t0k":
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="http://{realm}/token",service="svc",scope="repository:r/x:pull"'})
        return web.Response(body=GOOD)

    host = await serve_app(_blob_app(blob))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        await c.fetch_blob("r/x", GOOD_DIGEST)  # learns the challenge
        results = await asyncio.gather(*(c.fetch_blob("r/x", GOOD_DIGEST) for _ in range(8)))
    assert results == [GOOD] * 8 and token_calls == 1


async def test_large_manifest_arriving_in_pieces_is_read_whole(serve_app: ServeApp) -> None:
    entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                "digest": str(digest_of(str(i).encode()))} for i in range(12_000)]
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries}).encode()
    assert len(body) > 1 << 20

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
        await resp.prepare(request)
        for start in range(0, len(body), 50_000):
            await resp.write(body[start : start + 50_000])
            await asyncio.sleep(0.002)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", slow)
    host = await serve_app(app)
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        fetched = await c.get_manifest("r/x", str(digest_of(body)))
    assert fetched.data == body


async def test_head_manifest_without_digest_header_falls_back_to_get(serve_app: ServeApp) -> None:
    methods: list[str] = []

    async def terse(request: web.Request) -> web.Response:
        methods.append(request.method)
        ctype = "application/vnd.oci.image.index.v1+json"
        if request.method == "HEAD":
            return web.Response(headers={"Content-Type": ctype, "Content-Length": str(len(MANIFEST))})
        return web.Response(body=MANIFEST, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_route("*", "/v2/{repo:.+}/manifests/{ref}", terse)
    host = await serve_app(app)
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        info = await c.head_manifest("r/x", "latest")
    assert info == (digest_of(MANIFEST), "application/vnd.oci.image.index.v1+json", len(MANIFEST))
    assert methods == ["HEAD", "GET"]


async def test_body_that_always_breaks_off_is_a_transfer_interrupted(serve_app: ServeApp, tmp_path: Path) -> None:
    calls = 0

    async def always_drops(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        resp = web.StreamResponse(headers={"Content-Length": str(len(GOOD))})
        await resp.prepare(request)
        await resp.write(GOOD[:100])
        assert request.transport is not None
        request.transport.close()
        return resp

    host = await serve_app(_blob_app(always_drops))
    async with RegistryClient(host, retry=FAST, credentials=Credentials()) as c:
        with pytest.raises(TransferInterrupted, match="broke off") as info:
            await c.download_blob("r/x", GOOD_DIGEST, tmp_path / "blob")
        assert isinstance(info.value, RegistryError) and "r/x" in str(info.value)
        assert calls == FAST.attempts
        with pytest.raises(TransferInterrupted):
            async for _ in c.get_blob("r/x", GOOD_DIGEST):
                pass
    assert list(tmp_path.iterdir()) == []

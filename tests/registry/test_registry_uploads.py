"""Blob endpoints over HTTP: version check, uploads (monolithic, chunked, streamed), status, cancel,
mounts, HEAD/GET with Range, DELETE, restarts and concurrent pushes (distribution-spec end-1..end-13)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from regtools import Client, error_code, push_blob, sha256

from lamina.registry.services import STORAGE
from lamina.store import FilesystemBlobStore

API = "Docker-Distribution-API-Version"


async def test_version_check_and_api_header_on_every_response(client: Client) -> None:
    response = await client.get("/v2/")
    assert response.status == 200
    assert response.headers[API] == "registry/2.0"
    assert await response.json() == {}
    missing = await client.get("/v2/app/blobs/" + sha256(b"x"))
    assert missing.status == 404 and missing.headers[API] == "registry/2.0"


async def test_monolithic_post_then_head_and_get(client: Client) -> None:
    data = os.urandom(70_000)
    digest = await push_blob(client, "team/app", data)
    head = await client.head(f"/v2/team/app/blobs/{digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest
    assert await head.read() == b""
    get = await client.get(f"/v2/team/app/blobs/{digest}")
    assert get.status == 200
    assert get.headers["Content-Type"] == "application/octet-stream"
    assert get.headers["Docker-Content-Digest"] == digest
    assert await get.read() == data


async def test_monolithic_post_with_wrong_digest_is_digest_invalid(client: Client) -> None:
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": sha256(b"other")}, data=b"payload"
    )
    assert response.status == 400
    assert await error_code(response) == "DIGEST_INVALID"
    head = await client.head(f"/v2/app/blobs/{sha256(b'other')}")
    assert head.status == 404


async def test_malformed_and_unsupported_digests(client: Client) -> None:
    bad = await client.post("/v2/app/blobs/uploads/", params={"digest": "sha256:xyz"}, data=b"a")
    assert bad.status == 400 and await error_code(bad) == "DIGEST_INVALID"
    md5 = await client.post("/v2/app/blobs/uploads/", params={"digest": "md5:" + "0" * 32}, data=b"a")
    assert md5.status == 400 and await error_code(md5) == "UNSUPPORTED"
    get = await client.get("/v2/app/blobs/notadigest")
    assert get.status == 400 and await error_code(get) == "DIGEST_INVALID"


async def test_sha512_blob(client: Client) -> None:
    import hashlib

    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    response = await client.post("/v2/app/blobs/uploads/", params={"digest": digest}, data=data)
    assert response.status == 201
    assert (await (await client.get(f"/v2/app/blobs/{digest}")).read()) == data


async def test_invalid_repository_names(client: Client) -> None:
    for name in ("UPPER/case", "a//b", "trailing-/x", "-lead"):
        response = await client.post(f"/v2/{name}/blobs/uploads/")
        assert response.status == 400, name
        assert await error_code(response) == "NAME_INVALID"
    head = await client.head(f"/v2/Bad/blobs/{sha256(b'')}")
    assert head.status == 400


async def test_post_put_upload_and_location_headers(client: Client) -> None:
    start = await client.post("/v2/org/team/app/blobs/uploads/")
    assert start.status == 202
    location = start.headers["Location"]
    uuid = start.headers["Docker-Upload-UUID"]
    assert location == f"/v2/org/team/app/blobs/uploads/{uuid}"
    assert start.headers["Range"] == "0-0"
    data = b"x" * 1000
    put = await client.put(location, params={"digest": sha256(data)}, data=data)
    assert put.status == 201, await put.text()
    assert put.headers["Location"] == f"/v2/org/team/app/blobs/{sha256(data)}"
    assert put.headers["Docker-Content-Digest"] == sha256(data)
    gone = await client.get(location)
    assert gone.status == 404 and await error_code(gone) == "BLOB_UPLOAD_UNKNOWN"


async def test_chunked_upload_with_content_range_and_status(client: Client) -> None:
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    data = os.urandom(3000)
    first = await client.patch(
        location, data=data[:1000], headers={"Content-Range": "0-999", "Content-Type": "application/octet-stream"}
    )
    assert first.status == 202
    assert first.headers["Range"] == "0-999"
    assert first.headers["Location"] == location
    status = await client.get(location)
    assert status.status == 204
    assert status.headers["Range"] == "0-999"
    assert status.headers["Location"] == location
    second = await client.patch(location, data=data[1000:2500], headers={"Content-Range": "1000-2499"})
    assert second.status == 202 and second.headers["Range"] == "0-2499"
    done = await client.put(location, params={"digest": sha256(data)}, data=data[2500:])
    assert done.status == 201
    assert await (await client.get(f"/v2/app/blobs/{sha256(data)}")).read() == data


async def test_out_of_order_and_repeated_chunks_are_416(client: Client) -> None:
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    ok = await client.patch(location, data=b"a" * 10, headers={"Content-Range": "0-9"})
    assert ok.status == 202
    repeated = await client.patch(location, data=b"a" * 10, headers={"Content-Range": "0-9"})
    assert repeated.status == 416
    assert await error_code(repeated) == "RANGE_INVALID"
    assert repeated.headers["Range"] == "0-9"
    skipped = await client.patch(location, data=b"b" * 10, headers={"Content-Range": "20-29"})
    assert skipped.status == 416
    malformed = await client.patch(location, data=b"b", headers={"Content-Range": "bytes=banana"})
    assert malformed.status == 416
    mismatch = await client.patch(location, data=b"b" * 3, headers={"Content-Range": "10-19"})
    assert mismatch.status == 400 and await error_code(mismatch) == "SIZE_INVALID"
    status = await client.get(location)
    assert status.headers["Range"] == "0-9"


async def test_streamed_patch_without_content_range(client: Client) -> None:
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    data = os.urandom(3 << 20)

    async def stream():  # chunked transfer encoding, no Content-Length
        for i in range(0, len(data), 1 << 18):
            yield data[i : i + (1 << 18)]

    patch = await client.patch(location, data=stream())
    assert patch.status == 202
    assert patch.headers["Range"] == f"0-{len(data) - 1}"
    put = await client.put(location, params={"digest": sha256(data)})
    assert put.status == 201
    assert await (await client.get(f"/v2/app/blobs/{sha256(data)}")).read() == data


async def test_put_with_wrong_digest_keeps_nothing_visible(client: Client) -> None:
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    await client.patch(location, data=b"hello")
    wrong = await client.put(location, params={"digest": sha256(b"bye")})
    assert wrong.status == 400 and await error_code(wrong) == "DIGEST_INVALID"
    assert (await client.head(f"/v2/app/blobs/{sha256(b'bye')}")).status == 404
    missing = await client.put(location)
    assert missing.status == 400 and await error_code(missing) == "DIGEST_INVALID"


async def test_cancel_upload_and_unknown_sessions(client: Client) -> None:
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    assert (await client.delete(location)).status == 204
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = await client.request(method, location, params={"digest": sha256(b"")})
        assert response.status == 404, method
        assert await error_code(response) == "BLOB_UPLOAD_UNKNOWN"
    traversal = await client.get("/v2/app/blobs/uploads/..%2F..%2Fetc")
    assert traversal.status == 404


async def test_session_is_bound_to_its_repository(client: Client) -> None:
    start = await client.post("/v2/one/blobs/uploads/")
    uuid = start.headers["Docker-Upload-UUID"]
    other = await client.get(f"/v2/two/blobs/uploads/{uuid}")
    assert other.status == 404 and await error_code(other) == "BLOB_UPLOAD_UNKNOWN"


async def test_range_get(client: Client) -> None:
    data = bytes(range(256)) * 40
    digest = await push_blob(client, "app", data)
    part = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert await part.read() == data[100:200]
    tail = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=-10"})
    assert tail.status == 206 and await tail.read() == data[-10:]
    beyond = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status == 416


async def test_blob_is_visible_only_in_repositories_that_have_it(client: Client) -> None:
    digest = await push_blob(client, "one", b"private")
    other = await client.get(f"/v2/two/blobs/{digest}")
    assert other.status == 404 and await error_code(other) == "BLOB_UNKNOWN"


async def test_cross_repository_mount(client: Client) -> None:
    digest = await push_blob(client, "source", b"shared layer")
    mounted = await client.post("/v2/target/blobs/uploads/", params={"mount": digest, "from": "source"})
    assert mounted.status == 201
    assert mounted.headers["Location"] == f"/v2/target/blobs/{digest}"
    assert mounted.headers["Docker-Content-Digest"] == digest
    assert (await client.head(f"/v2/target/blobs/{digest}")).status == 200
    # source lacks it: a normal upload session instead
    absent = sha256(b"never pushed")
    fallback = await client.post("/v2/target/blobs/uploads/", params={"mount": absent, "from": "source"})
    assert fallback.status == 202
    assert "/v2/target/blobs/uploads/" in fallback.headers["Location"]
    wrong_source = await client.post("/v2/third/blobs/uploads/", params={"mount": digest, "from": "elsewhere"})
    assert wrong_source.status == 202
    bad_from = await client.post("/v2/third/blobs/uploads/", params={"mount": digest, "from": "Bad Name"})
    assert bad_from.status == 400 and await error_code(bad_from) == "NAME_INVALID"


async def test_automatic_mount_without_from(client: Client) -> None:
    digest = await push_blob(client, "somewhere/else", b"auto mount me")
    mounted = await client.post("/v2/fresh/blobs/uploads/", params={"mount": digest})
    assert mounted.status == 201
    assert (await client.get(f"/v2/fresh/blobs/{digest}")).status == 200


async def test_delete_blob_unlinks_it_from_the_repository(client: Client) -> None:
    digest = await push_blob(client, "one", b"to delete")
    await push_blob(client, "two", b"to delete")
    deleted = await client.delete(f"/v2/one/blobs/{digest}")
    assert deleted.status == 202
    assert (await client.head(f"/v2/one/blobs/{digest}")).status == 404
    assert (await client.head(f"/v2/two/blobs/{digest}")).status == 200
    again = await client.delete(f"/v2/one/blobs/{digest}")
    assert again.status == 404 and await error_code(again) == "BLOB_UNKNOWN"


async def test_unknown_endpoint_and_method(client: Client) -> None:
    nothing = await client.get("/v2/app/unknown/thing")
    assert nothing.status == 404
    await error_code(nothing)
    method = await client.request("POST", f"/v2/app/blobs/{sha256(b'')}")
    assert method.status == 405 and await error_code(method) == "UNSUPPORTED"


async def test_upload_survives_a_server_restart(make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "restart-root"
    first = await make_client(root=root)
    start = await first.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    data = os.urandom(100_000)
    await first.patch(location, data=data[:60_000], headers={"Content-Range": "0-59999"})
    await first.close()
    second = await make_client(root=root)
    status = await second.get(location)
    assert status.status == 204 and status.headers["Range"] == "0-59999"
    await second.patch(location, data=data[60_000:], headers={"Content-Range": f"60000-{len(data) - 1}"})
    done = await second.put(location, params={"digest": sha256(data)})
    assert done.status == 201
    assert await (await second.get(f"/v2/app/blobs/{sha256(data)}")).read() == data


async def test_concurrent_pushes_of_the_same_blob(client: Client) -> None:
    data = os.urandom(1 << 20)
    results = await asyncio.gather(*(push_blob(client, f"repo{i % 3}", data) for i in range(12)))
    assert set(results) == {sha256(data)}
    for i in range(3):
        assert await (await client.get(f"/v2/repo{i}/blobs/{sha256(data)}")).read() == data


async def test_expired_uploads_are_reclaimed(make_client) -> None:  # type: ignore[no-untyped-def]
    from lamina.registry.janitor import expire_uploads
    from lamina.registry.services import STORAGE

    client = await make_client()
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    await client.patch(location, data=b"abandoned")
    storage = client.server.app[STORAGE]
    assert expire_uploads(storage, 3600) == 0
    assert expire_uploads(storage, 3600, now=10**10) == 1
    assert (await client.get(location)).status == 404
    assert storage.uploads.current_size(start.headers["Docker-Upload-UUID"]) is None
    # data on disk that no session names (a crash between the two writes) goes too, once as old
    storage.uploads.create("orphan")
    assert expire_uploads(storage, 3600) == 0
    assert expire_uploads(storage, 3600, now=10**10) == 1
    assert storage.uploads.current_size("orphan") is None


async def test_fresh_data_is_never_taken_for_an_orphan(make_client) -> None:  # type: ignore[no-untyped-def]
    """A session's data exists before its record: with an expiry shorter than that gap, the sweep must not
    take an upload being started for a crash's leftover (the janitor test below raced it into a 500)."""
    import time

    from lamina.registry.janitor import ORPHAN_MIN_AGE_SECONDS, expire_uploads
    from lamina.registry.services import STORAGE

    client = await make_client()
    storage = client.server.app[STORAGE]
    storage.uploads.create("starting")
    assert expire_uploads(storage, 0.001) == 0
    assert storage.uploads.current_size("starting") == 0
    later = time.time() + ORPHAN_MIN_AGE_SECONDS + 1
    assert expire_uploads(storage, 0.001, now=later) == 1
    assert storage.uploads.current_size("starting") is None


async def test_janitor_task_runs_in_the_server(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(run_janitor=True, upload_expiry_seconds=0.001)
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    for _ in range(100):
        if (await client.get(location)).status == 404:
            break
        await asyncio.sleep(0.1)
    assert (await client.get(location)).status == 404


class _RemoteLikeBlobs(FilesystemBlobStore):
    """The filesystem store seen as a non-local backend (as S3 will be): no path to sendfile from."""

    def local_path(self, digest):  # type: ignore[no-untyped-def]
        return None


async def test_streamed_get_and_range_for_non_local_backends(client: Client) -> None:
    storage = client.server.app[STORAGE]
    storage.blobs = _RemoteLikeBlobs(storage.paths)
    data = os.urandom(3 << 20)
    digest = await push_blob(client, "app", data)
    whole = await client.get(f"/v2/app/blobs/{digest}")
    assert whole.status == 200 and whole.headers["Content-Length"] == str(len(data))
    assert await whole.read() == data
    part = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=1000-1999999"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 1000-1999999/{len(data)}"
    assert await part.read() == data[1000:2000000]
    suffix = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert await suffix.read() == data[-5:]
    open_ended = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=3145000-"})
    assert await open_ended.read() == data[3145000:]
    for bad in ("bytes=9999999-", "bytes=5-2", "items=0-1", "bytes=-"):
        response = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": bad})
        assert response.status == 416, bad
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"


def test_zero_copy_path_is_taken_under_uvloop(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Under uvloop (as served) blob bodies go through sendfile(2) in lamina's pool, ranges included."""
    import uvloop
    from aiohttp.test_utils import TestClient, TestServer

    from lamina.registry.app import create_app
    from lamina.registry.config import RegistryConfig
    from lamina.registry.routes import zerocopy

    sent: list[tuple[int, int]] = []
    real = zerocopy._send_all

    def spy(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
        sent.append((offset, count))
        real(sock_fd, file_fd, offset, count)

    monkeypatch.setattr(zerocopy, "_send_all", spy)

    async def scenario() -> None:
        config = RegistryConfig(root=tmp_path / "uv", run_janitor=False)
        client = TestClient(TestServer(create_app(config), host="127.0.0.1"))
        await client.start_server()
        try:
            data = os.urandom(5 << 20)
            digest = await push_blob(client, "app", data)
            assert await (await client.get(f"/v2/app/blobs/{digest}")).read() == data
            part = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=10-19"})
            assert part.status == 206 and await part.read() == data[10:20]
        finally:
            await client.close()

    uvloop.run(scenario())
    assert sent == [(0, 5 << 20), (10, 10)]


async def test_streamed_body_longer_or_shorter_than_its_content_range_keeps_nothing(client: Client) -> None:
    """A chunked-encoded PATCH has no Content-Length: its Content-Range is checked while the body streams,
    so a longer body fails before the extra bytes are stored, and neither kind leaves any byte behind."""
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    first = await client.patch(location, data=b"0123456789", headers={"Content-Range": "0-9"})
    assert first.status == 202

    def streamed(data: bytes):  # type: ignore[no-untyped-def]
        async def body():  # type: ignore[no-untyped-def]
            for i in range(0, len(data), 1 << 16):
                yield data[i : i + (1 << 16)]
        return body()

    longer = await client.patch(location, data=streamed(os.urandom(300_000)), headers={"Content-Range": "10-1009"})
    assert longer.status == 400 and await error_code(longer) == "SIZE_INVALID"
    shorter = await client.patch(location, data=streamed(b"abc"), headers={"Content-Range": "10-19"})
    assert shorter.status == 400 and await error_code(shorter) == "SIZE_INVALID"
    status = await client.get(location)
    assert status.headers["Range"] == "0-9"
    exact = await client.patch(location, data=streamed(b"abcdefghij"), headers={"Content-Range": "10-19"})
    assert exact.status == 202 and exact.headers["Range"] == "0-19"
    put = await client.put(location, params={"digest": sha256(b"0123456789abcdefghij")})
    assert put.status == 201

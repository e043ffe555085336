"""``RegistryClient.mount_blob``: a cross-repository mount and never an upload, against lamina's registry
and CNCF distribution. 201 -> True; a 202 (the source lacks the blob, so the registry opened an upload
session instead) -> False, with that session cancelled, not left to expire: the client's own session
carries an aiohttp trace hook that records each response, and every session Location a mount attempt
got is then asked for its status (spec: 404 BLOB_UPLOAD_UNKNOWN once cancelled)."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
import pytest
from yarl import URL

from helpers.registries import RegistryProcess
from lamina.client import RegistryClient
from lamina.oci import digest_of


def _recording_session(seen: list[tuple[str, URL, int, str | None]]) -> aiohttp.ClientSession:
    async def on_end(_session: aiohttp.ClientSession, _ctx: SimpleNamespace,
                     params: aiohttp.TraceRequestEndParams) -> None:
        seen.append((params.method, params.url, params.response.status, params.response.headers.get("Location")))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return aiohttp.ClientSession(trace_configs=[trace], auto_decompress=False)


async def _check_mount_blob(host: str) -> None:
    data = os.urandom(4000)
    digest = digest_of(data)
    seen: list[tuple[str, URL, int, str | None]] = []
    async with _recording_session(seen) as http:
        async with RegistryClient(host, session=http) as c:
            await c.push_blob("mount/src", digest, len(data), data)
            before = c.stats.uploaded["layer"]
            assert await c.mount_blob("mount/dst", digest, ["mount/src"]) is True  # 201
            assert await c.head_blob("mount/dst", digest) == len(data)
            assert c.stats.uploaded["layer"] == before  # no byte sent

            seen.clear()
            missing = digest_of(b"nowhere")
            # no repository lends it: two 202s (the target itself is never asked), both cancelled
            assert await c.mount_blob("mount/other", missing, ["mount/src", "mount/empty", "mount/other"]) is False
            assert await c.head_blob("mount/other", missing) is None
            assert c.stats.uploaded["layer"] == before
        opened = [URL(loc) for method, url, status, loc in seen
                  if method == "POST" and "mount" in url.query and status == 202 and loc]
        assert [url.query["from"] for method, url, _, _ in seen if method == "POST"] == ["mount/src", "mount/empty"]
        assert len(opened) == 2
        cancelled = {url.path for method, url, status, _ in seen if method == "DELETE" and status in (200, 202, 204)}
        for location in opened:
            target = location if location.is_absolute() else URL(f"http://{host}").join(location)
            assert target.path in cancelled
            async with http.get(target) as resp:
                assert resp.status == 404, await resp.text()  # the session is gone, not dangling


async def test_mount_blob_on_lamina_registry(make_lamina_registry: Callable[..., RegistryProcess]) -> None:
    await _check_mount_blob(make_lamina_registry().host)


@pytest.mark.interop
async def test_mount_blob_on_distribution(distribution: RegistryProcess) -> None:
    await _check_mount_blob(distribution.host)

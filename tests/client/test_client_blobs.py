"""Blob push/pull against real CNCF distribution over loopback: HEAD, mounts, monolithic and chunked
uploads from files, verified streaming and atomic downloads, transfer counters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.registries import RegistryProcess
from lamina.client import DigestMismatch, NotFound, PushOutcome, RegistryClient, RegistryError
from lamina.oci import digest_of

pytestmark = pytest.mark.interop  # every test here talks to CNCF distribution


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def test_push_bytes_then_exists_head_and_fetch(distribution: RegistryProcess) -> None:
    data = b'{"architecture":"amd64"}'
    digest = digest_of(data)
    async with RegistryClient(distribution.host) as c:
        assert await c.head_blob("proj/app", digest) is None
        assert await c.push_blob("proj/app", digest, len(data), data, kind="config") == PushOutcome.UPLOADED
        assert await c.push_blob("proj/app", digest, len(data), data, kind="config") == PushOutcome.EXISTS
        assert await c.head_blob("proj/app", str(digest)) == len(data)
        assert await c.fetch_blob("proj/app", digest, size=len(data)) == data
        assert c.stats.uploaded["config"] == len(data)
        assert c.stats.downloaded["config"] == len(data)
        assert c.stats.downloaded["layer"] == 0


async def test_large_file_is_uploaded_in_content_range_chunks(distribution: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "layer.tar.gz"
    data = _write(src, 300_000)
    digest = digest_of(data)
    sent: list[int] = []
    received: list[int] = []
    async with RegistryClient(distribution.host, monolithic_limit=50_000, chunk_size=64_000) as c:
        requests_before = c.stats.requests
        assert await c.push_blob("proj/big", digest, len(data), src, progress=sent.append) == PushOutcome.UPLOADED
        # HEAD + POST + 5 PATCH chunks + PUT
        assert c.stats.requests - requests_before == 8
        assert c.stats.uploaded["layer"] == len(data)
        dest = tmp_path / "out" / "blob"
        dest.parent.mkdir()
        assert await c.download_blob("proj/big", digest, dest, size=len(data), progress=received.append) == len(data)
    assert dest.read_bytes() == data
    assert sum(sent) == sum(received) == len(data) and max(sent) <= 64_000
    assert [p.name for p in dest.parent.iterdir()] == ["blob"]


async def test_small_file_is_one_monolithic_put(distribution: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "small"
    data = _write(src, 10_000)
    async with RegistryClient(distribution.host) as c:
        before = c.stats.requests
        assert await c.push_blob("proj/small", digest_of(data), len(data), src) == PushOutcome.UPLOADED
        assert c.stats.requests - before == 3  # HEAD, POST, PUT
        assert await c.fetch_blob("proj/small", digest_of(data), kind="layer") == data


async def test_cross_repo_mount_sends_no_bytes(distribution: RegistryProcess) -> None:
    data = os.urandom(5000)
    digest = digest_of(data)
    async with RegistryClient(distribution.host) as c:
        await c.push_blob("cache/repo", digest, len(data), data)
        sent = c.stats.uploaded["layer"]
        # The first candidate lacks the blob (distribution then opens an upload session, which we cancel).
        outcome = await c.push_blob("app/repo", digest, len(data), data, mount_from=["nowhere/repo", "cache/repo"])
        assert outcome == PushOutcome.MOUNTED
        assert c.stats.uploaded["layer"] == sent
        assert await c.head_blob("app/repo", digest) == len(data)


async def test_failed_mount_uploads_instead(distribution: RegistryProcess) -> None:
    data = os.urandom(3000)
    digest = digest_of(data)
    async with RegistryClient(distribution.host) as c:
        outcome = await c.push_blob("app/other", digest, len(data), data, mount_from=["missing/repo"])
        assert outcome == PushOutcome.UPLOADED
        assert await c.fetch_blob("app/other", digest, kind="layer") == data


async def test_get_blob_streams_and_verifies(distribution: RegistryProcess) -> None:
    data = os.urandom(3 << 20)
    digest = digest_of(data)
    async with RegistryClient(distribution.host) as c:
        await c.push_blob("proj/stream", digest, len(data), data)
        chunks = [chunk async for chunk in c.get_blob("proj/stream", digest, size=len(data))]
        assert len(chunks) > 1 and b"".join(chunks) == data
        assert c.stats.downloaded["layer"] == len(data)


async def test_wrong_expected_size_is_a_mismatch(distribution: RegistryProcess) -> None:
    data = b"twelve bytes"
    digest = digest_of(data)
    async with RegistryClient(distribution.host) as c:
        await c.push_blob("proj/size", digest, len(data), data)
        with pytest.raises(DigestMismatch, match="expected 5"):
            await c.fetch_blob("proj/size", digest, size=5)
        with pytest.raises(DigestMismatch, match="expected 20"):
            await c.fetch_blob("proj/size", digest, size=20)


async def test_missing_blob_is_not_found_naming_it(distribution: RegistryProcess, tmp_path: Path) -> None:
    digest = digest_of(b"never pushed")
    out = tmp_path / "out"
    out.mkdir()
    async with RegistryClient(distribution.host) as c:
        with pytest.raises(NotFound) as info:
            await c.fetch_blob("proj/none", digest)
        with pytest.raises(NotFound):
            await c.download_blob("proj/none", digest, out / "x")
    assert info.value.code == "BLOB_UNKNOWN"
    text = str(info.value)
    assert distribution.host in text and "proj/none" in text and str(digest) in text
    assert list(out.iterdir()) == []


async def test_push_refuses_bytes_that_do_not_match(distribution: RegistryProcess) -> None:
    async with RegistryClient(distribution.host) as c:
        with pytest.raises(DigestMismatch, match="bytes given to push"):
            await c.push_blob("proj/bad", digest_of(b"a"), 1, b"b")
        assert c.stats.requests == 0


async def test_push_file_whose_content_differs_names_the_file(distribution: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "changed"
    src.write_bytes(b"content now")
    claimed = digest_of(b"content was")
    async with RegistryClient(distribution.host) as c:
        with pytest.raises(DigestMismatch, match=str(src)):
            await c.push_blob("proj/bad", claimed, 11, src)
        assert await c.head_blob("proj/bad", claimed) is None


async def test_push_file_size_mismatch(distribution: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "short"
    src.write_bytes(b"abc")
    async with RegistryClient(distribution.host) as c:
        with pytest.raises(RegistryError, match="has 3 bytes, the descriptor says 4"):
            await c.push_blob("proj/bad", digest_of(b"abcd"), 4, src)

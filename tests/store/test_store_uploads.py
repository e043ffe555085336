"""UploadStore behaviour, run against every implementation (conftest.UPLOAD_STORES).

Multi-process cases use real forked processes on the same root, as the registry's workers do.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from store_helpers import blob_digest, stream

from lamina.store import BlobStore, StoreError, UploadConflict, UploadStore, UploadUnknown

UploadFactory = Callable[[Path], tuple[UploadStore, BlobStore]]
FORK = multiprocessing.get_context("fork")


def leftovers(root: Path) -> list[str]:
    """Files under uploads/ and tmp/ (what a finished upload must not leave behind)."""
    found = []
    for sub in ("uploads", "tmp"):
        for directory, dirs, files in os.walk(root / sub):
            found += [os.path.join(directory, name) for name in files + dirs]
    return found


async def test_upload_in_chunks_then_commit(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, blobs = upload_factory(tmp_path)
    data = os.urandom(3 * (1 << 20) + 5)
    digest = blob_digest(data)
    uploads.create("s1")
    assert uploads.current_size("s1") == 0
    assert await uploads.append("s1", 0, stream(data[:1000], 300)) == 1000
    assert await uploads.append("s1", 1000, stream(data[1000:], 1 << 20)) == len(data)
    assert uploads.current_size("s1") == len(data)
    assert blobs.size(digest) is None  # not visible before commit
    assert await uploads.commit("s1", digest) == len(data)
    assert blobs.size(digest) == len(data)
    assert b"".join([c async for c in blobs.read(digest)]) == data
    assert uploads.current_size("s1") is None
    assert leftovers(tmp_path) == []


async def test_empty_upload(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, blobs = upload_factory(tmp_path)
    uploads.create("empty")
    assert await uploads.commit("empty", blob_digest(b"")) == 0
    assert blobs.size(blob_digest(b"")) == 0


async def test_digest_mismatch_keeps_session_and_shows_nothing(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, blobs = upload_factory(tmp_path)
    uploads.create("s1")
    await uploads.append("s1", 0, stream(b"actual content"))
    wrong = blob_digest(b"claimed content")
    with pytest.raises(ValueError, match=f"not {wrong}"):
        await uploads.commit("s1", wrong)
    assert blobs.size(wrong) is None
    assert blobs.size(blob_digest(b"actual content")) is None
    assert list(blobs.iter_digests()) == []
    assert uploads.current_size("s1") == len(b"actual content")  # session kept: the client may go on
    await uploads.append("s1", 14, stream(b"!"))
    assert await uploads.commit("s1", blob_digest(b"actual content!")) == 15


async def test_out_of_order_append_is_a_conflict(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, _ = upload_factory(tmp_path)
    uploads.create("s1")
    await uploads.append("s1", 0, stream(b"0123456789"))
    for offset in (0, 5, 11):
        with pytest.raises(UploadConflict) as caught:
            await uploads.append("s1", offset, stream(b"x"))
        assert caught.value.current_size == 10
    assert uploads.current_size("s1") == 10


async def test_failed_stream_leaves_the_upload_as_it_was(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, _ = upload_factory(tmp_path)
    uploads.create("s1")
    await uploads.append("s1", 0, stream(b"first;"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"half of a chunk"
        yield os.urandom(2 << 20)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await uploads.append("s1", 6, broken())
    assert uploads.current_size("s1") == 6
    await uploads.append("s1", 6, stream(b"second"))
    assert await uploads.commit("s1", blob_digest(b"first;second")) == 12


@pytest.mark.parametrize("write_in_thread", [False, True])
async def test_cancelled_append_leaves_the_upload_as_it_was(
    tmp_path: Path, upload_factory: UploadFactory, write_in_thread: bool
) -> None:
    uploads, _ = upload_factory(tmp_path)
    if hasattr(uploads, "write_in_thread"):  # the filesystem store's knob: cancel while a thread writes
        uploads.write_in_thread = write_in_thread
    uploads.create("s1")
    await uploads.append("s1", 0, stream(b"kept"))
    never = asyncio.Event()

    async def hanging() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield os.urandom(4 << 20)
        await never.wait()
        yield b"unreachable"

    for delay in (0.0, 0.005, 0.05):  # cancel while a write runs in a thread, or while waiting for data
        task = asyncio.create_task(uploads.append("s1", 4, hanging()))
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert uploads.current_size("s1") == 4
    await uploads.append("s1", 4, stream(b" and more"))
    assert await uploads.commit("s1", blob_digest(b"kept and more")) == 13


async def test_concurrent_request_on_one_session_is_refused(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, _ = upload_factory(tmp_path)
    uploads.create("s1")
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"slow "
        await release.wait()
        yield b"chunk"

    first = asyncio.create_task(uploads.append("s1", 0, slow()))
    await asyncio.sleep(0.01)
    with pytest.raises(UploadConflict, match="busy"):
        await uploads.append("s1", 0, stream(b"other"))
    with pytest.raises(UploadConflict, match="busy"):
        await uploads.commit("s1", blob_digest(b"slow chunk"))
    release.set()
    assert await first == 10
    assert await uploads.commit("s1", blob_digest(b"slow chunk")) == 10


async def test_unknown_and_finished_sessions(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, _ = upload_factory(tmp_path)
    assert uploads.current_size("nope") is None
    assert uploads.current_size("../../etc") is None
    with pytest.raises(UploadUnknown):
        await uploads.append("nope", 0, stream(b"x"))
    with pytest.raises(UploadUnknown):
        await uploads.append("../escape", 0, stream(b"x"))
    with pytest.raises(UploadUnknown):
        await uploads.commit("nope", blob_digest(b""))
    uploads.create("s1")
    with pytest.raises(StoreError, match="already exists"):
        uploads.create("s1")
    await uploads.commit("s1", blob_digest(b""))
    with pytest.raises(UploadUnknown):
        await uploads.append("s1", 0, stream(b"x"))
    uploads.create("s2")
    uploads.discard("s2")
    uploads.discard("s2")
    assert uploads.current_size("s2") is None
    assert leftovers(tmp_path) == []


async def test_upload_survives_a_restart(tmp_path: Path, upload_factory: UploadFactory) -> None:
    data = os.urandom(200_000)
    uploads, _ = upload_factory(tmp_path)
    uploads.create("s1")
    await uploads.append("s1", 0, stream(data[:50_000]))
    del uploads  # "restart": a fresh instance keeps no in-memory hash state
    uploads, blobs = upload_factory(tmp_path)
    assert uploads.current_size("s1") == 50_000
    await uploads.append("s1", 50_000, stream(data[50_000:]))
    with pytest.raises(ValueError, match="hash to"):  # the rehash on commit really checks the bytes
        await uploads.commit("s1", blob_digest(data[:-1]))
    assert await uploads.commit("s1", blob_digest(data)) == len(data)
    assert b"".join([c async for c in blobs.read(blob_digest(data))]) == data


async def test_chunks_alternating_between_workers(tmp_path: Path, upload_factory: UploadFactory) -> None:
    """Two instances (workers) take turns; each one's cached hash state must not be trusted when stale."""
    data = os.urandom(90_000)
    first, blobs = upload_factory(tmp_path)
    second, _ = upload_factory(tmp_path)
    first.create("s1")
    await first.append("s1", 0, stream(data[:30_000]))
    await second.append("s1", 30_000, stream(data[30_000:60_000]))
    await first.append("s1", 60_000, stream(data[60_000:]))
    with pytest.raises(ValueError):
        await first.commit("s1", blob_digest(data[:60_000]))
    assert await first.commit("s1", blob_digest(data)) == len(data)
    assert blobs.size(blob_digest(data)) == len(data)


async def test_commit_with_sha512(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, blobs = upload_factory(tmp_path)
    uploads.create("s1")
    await uploads.append("s1", 0, stream(b"sha512 content"))
    digest = blob_digest(b"sha512 content", "sha512")
    assert await uploads.commit("s1", digest) == 14
    assert blobs.size(digest) == 14


async def test_commit_when_the_blob_already_exists(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, blobs = upload_factory(tmp_path)
    data = b"pushed twice"
    for session in ("s1", "s2"):
        uploads.create(session)
        await uploads.append(session, 0, stream(data))
    assert await uploads.commit("s1", blob_digest(data)) == len(data)
    assert await uploads.commit("s2", blob_digest(data)) == len(data)
    assert list(blobs.iter_digests()) == [blob_digest(data)]
    assert leftovers(tmp_path) == []


def _upload_and_commit(factory: UploadFactory, root: Path, session: str, data: bytes, barrier: object) -> None:
    async def run() -> None:
        uploads, _ = factory(root)
        uploads.create(session)
        await uploads.append(session, 0, stream(data, 1 << 16))
        barrier.wait()  # type: ignore[attr-defined]
        await uploads.commit(session, blob_digest(data))

    asyncio.run(run())


def test_concurrent_commits_of_one_blob_from_processes(tmp_path: Path, upload_factory: UploadFactory) -> None:
    data = os.urandom(4 << 20)
    barrier = FORK.Barrier(4)
    workers = [
        FORK.Process(target=_upload_and_commit, args=(upload_factory, tmp_path, f"s{i}", data, barrier))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    _, blobs = upload_factory(tmp_path)
    assert list(blobs.iter_digests()) == [blob_digest(data)]
    path = blobs.local_path(blob_digest(data))
    assert path is None or path.read_bytes() == data
    assert leftovers(tmp_path) == []


def _append_racing(factory: UploadFactory, root: Path, payload: bytes, barrier: object, results: object) -> None:
    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]
            await asyncio.sleep(0.002)

    async def run() -> str:
        uploads, _ = factory(root)
        barrier.wait()  # type: ignore[attr-defined]
        try:
            await uploads.append("shared", 0, slowly())
        except UploadConflict:
            return "conflict"
        return "appended"

    results.put(asyncio.run(run()))  # type: ignore[attr-defined]


def test_processes_appending_to_one_session_do_not_interleave(tmp_path: Path, upload_factory: UploadFactory) -> None:
    uploads, _ = upload_factory(tmp_path)
    uploads.create("shared")
    barrier, results = FORK.Barrier(3), FORK.Queue()
    payloads = [bytes([65 + i]) * 20_000 for i in range(3)]
    workers = [
        FORK.Process(target=_append_racing, args=(upload_factory, tmp_path, payload, barrier, results))
        for payload in payloads
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["appended", "conflict", "conflict"]
    assert uploads.current_size("shared") == 20_000
    committed = []
    for payload in payloads:  # exactly one writer's bytes, never a mix
        try:
            committed.append(asyncio.run(uploads.commit("shared", blob_digest(payload))))
        except ValueError:
            continue
        break
    assert committed == [20_000]


def _append_until_killed(factory: UploadFactory, root: Path, data: bytes, started: object) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1 << 20):  # whole write buffers: each reaches the file at once
            yield data[start : start + (1 << 20)]
            if start >= 2 << 20:
                await asyncio.sleep(0.2)  # the store's writer thread catches up with what it was handed
                started.set()  # type: ignore[attr-defined]
                await asyncio.sleep(0.05)

    async def run() -> None:
        uploads, _ = factory(root)
        await uploads.append("s1", 0, trickle())

    asyncio.run(run())


def test_worker_killed_mid_append(tmp_path: Path, upload_factory: UploadFactory) -> None:
    """A SIGKILL cannot truncate: the written prefix stays, and the client resumes from current_size."""
    data = os.urandom(8 << 20)
    uploads, blobs = upload_factory(tmp_path)
    uploads.create("s1")
    started = FORK.Event()
    worker = FORK.Process(target=_append_until_killed, args=(upload_factory, tmp_path, data, started))
    worker.start()
    assert started.wait(30)
    worker.kill()
    worker.join(30)
    size = uploads.current_size("s1")
    if hasattr(uploads, "lock_stale_seconds"):  # S3: an append is saved whole or not at all, and the lock
        assert size == 0  # of a killed worker on this host is taken over at once (its process is gone)
    else:  # a local file keeps the prefix the killed worker wrote (the thread may trail the stream)
        assert size is not None and 1 << 20 <= size < len(data)
    assert blobs.size(blob_digest(data)) is None
    if size:
        with pytest.raises(UploadConflict) as caught:  # the client's retry of its whole chunk is refused...
            asyncio.run(uploads.append("s1", 0, stream(data)))
        assert caught.value.current_size == size  # ...with the size to resume from
    asyncio.run(uploads.append("s1", size, stream(data[size:])))
    assert asyncio.run(uploads.commit("s1", blob_digest(data))) == len(data)


def _watch_for_blob(factory: UploadFactory, root: Path, data: bytes, ready: object, results: object) -> None:
    async def run() -> str:
        _, blobs = factory(root)
        digest = blob_digest(data)
        ready.set()  # type: ignore[attr-defined]
        for _ in range(200_000):
            if blobs.size(digest) is not None:
                seen = b"".join([chunk async for chunk in blobs.read(digest)])
                return "whole" if seen == data else f"partial {len(seen)}"
            await asyncio.sleep(0)
        return "never"

    results.put(asyncio.run(run()))  # type: ignore[attr-defined]


def test_another_process_never_sees_a_partial_blob(tmp_path: Path, upload_factory: UploadFactory) -> None:
    data = os.urandom(8 << 20)
    uploads, _ = upload_factory(tmp_path)
    ready, results = FORK.Event(), FORK.Queue()
    watcher = FORK.Process(target=_watch_for_blob, args=(upload_factory, tmp_path, data, ready, results))
    watcher.start()
    assert ready.wait(30)
    uploads.create("s1")
    asyncio.run(uploads.append("s1", 0, stream(data, 1 << 16)))
    asyncio.run(uploads.commit("s1", blob_digest(data)))
    watcher.join(60)
    assert results.get(timeout=5) == "whole"

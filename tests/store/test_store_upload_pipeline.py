"""The filesystem upload store's pipelined append (hash + write in a thread while the loop receives) and the
one-transaction link that closes an upload session."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import resource
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_helpers import blob_digest

from lamina.store import BlobUnknown, UploadSession, open_storage
from lamina.store.filesystem import FilesystemUploadStore


async def ragged(data: bytes, seed: int) -> AsyncIterator[bytes | bytearray | memoryview]:
    """Chunks of random sizes and buffer types, crossing every buffer boundary in a different place."""
    rng = random.Random(seed)
    view = memoryview(data)
    kinds = (bytes, bytearray, lambda b: memoryview(bytes(b)))
    start = 0
    while start < len(data):
        size = rng.choice((1, 17, 4095, 4096, 4097, 30_000, 70_000))
        yield rng.choice(kinds)(view[start : start + size])
        start += size
        if rng.random() < 0.3:
            await asyncio.sleep(0)


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("write_buffer", [4096, 65_536, 1 << 20])
async def test_ragged_chunks_hash_and_land_in_order(tmp_path: Path, threaded: bool, write_buffer: int) -> None:
    storage = open_storage(tmp_path)
    uploads = FilesystemUploadStore(storage.paths, write_buffer=write_buffer, write_in_thread=threaded)
    data = os.urandom(700_001)
    uploads.create("s1")
    cut = 300_003
    assert await uploads.append("s1", 0, ragged(data[:cut], 1)) == cut
    assert await uploads.append("s1", cut, ragged(data[cut:], 2)) == len(data)
    state = uploads._states["s1"]
    assert state.hasher.hexdigest() == blob_digest(data).encoded  # the incremental hash saw every byte in order
    assert await uploads.commit("s1", blob_digest(data)) == len(data)
    assert b"".join([c async for c in storage.blobs.read(blob_digest(data))]) == data


def _append_past_the_file_size_limit(root: Path, limit: int) -> int:
    """In a child process: append with writes that fail (EFBIG) in the worker thread; exit code = outcome."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    uploads = FilesystemUploadStore(open_storage(root).paths, write_buffer=1 << 16)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield os.urandom(1 << 16)

    try:
        asyncio.run(uploads.append("s1", 10, body()))
    except OSError as exc:
        return 3 if exc.errno == errno.EFBIG else 2
    return 1


def test_a_write_error_in_the_thread_fails_the_append_and_keeps_nothing(tmp_path: Path) -> None:
    uploads = FilesystemUploadStore(open_storage(tmp_path).paths)
    uploads.create("s1")
    asyncio.run(uploads.append("s1", 0, ragged(b"0123456789", 3)))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 4
        try:
            code = _append_past_the_file_size_limit(tmp_path, 1 << 20)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3  # EFBIG surfaced from the worker thread
    assert uploads.current_size("s1") == 10  # truncated back: the append was all-or-nothing
    data = b"0123456789" + b"rest"
    asyncio.run(uploads.append("s1", 10, ragged(b"rest", 4)))
    assert asyncio.run(uploads.commit("s1", blob_digest(data))) == len(data)


def test_link_uploaded_blob_links_and_closes_the_session_in_one_transaction(tmp_path: Path) -> None:
    metadata = open_storage(tmp_path).metadata
    digest = blob_digest(b"layer")
    metadata.create_upload(UploadSession("s1", "app", 0, 100.0, 100.0))
    with pytest.raises(BlobUnknown):  # the bytes vanished (GC): nothing changes, the session stays
        metadata.link_uploaded_blob("s1", "app", digest, 5, lambda: False)
    assert metadata.get_upload("s1") is not None
    assert metadata.linked_blob_size("app", digest) is None
    assert not metadata.repository_exists("app")
    metadata.link_uploaded_blob("s1", "app", digest, 5, lambda: True)
    assert metadata.get_upload("s1") is None
    assert metadata.linked_blob_size("app", digest) == 5

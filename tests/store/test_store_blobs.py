"""BlobStore behaviour, run against every implementation (conftest.BLOB_STORES)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from store_helpers import blob_digest

from lamina.oci import Digest
from lamina.store import BlobStore, BlobUnknown

BlobFactory = Callable[[Path], BlobStore]


async def read_all(store: BlobStore, digest: Digest, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest, start, end)])


def test_put_then_size_and_local_path(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    data = b'{"config": true}'
    digest = blob_digest(data)
    assert store.size(digest) is None
    assert store.local_path(digest) is None
    store.put(digest, data)
    assert store.size(digest) == len(data)
    path = store.local_path(digest)
    if path is not None:  # local backends: a read-only file with exactly the bytes
        assert path.read_bytes() == data
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o400


def test_put_refuses_content_that_does_not_match(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    digest = blob_digest(b"one")
    with pytest.raises(ValueError, match=str(digest)):
        store.put(digest, b"two")
    assert store.size(digest) is None


def test_put_is_idempotent(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    data = b"same bytes twice"
    store.put(blob_digest(data), data)
    store.put(blob_digest(data), data)
    assert list(store.iter_digests()) == [blob_digest(data)]


async def test_read_whole_and_ranges(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    data = os.urandom(3 * (1 << 20) + 17)  # several read chunks, some of them threaded
    digest = blob_digest(data)
    store.put(digest, data)
    assert await read_all(store, digest) == data
    assert await read_all(store, digest, 5, 9) == data[5:9]
    assert await read_all(store, digest, (1 << 20) - 3, len(data)) == data[(1 << 20) - 3 :]
    assert await read_all(store, digest, 10, 10) == b""
    with pytest.raises(ValueError, match="outside blob"):
        await read_all(store, digest, 0, len(data) + 1)
    with pytest.raises(ValueError, match="outside blob"):
        await read_all(store, digest, 9, 5)


async def test_read_missing_blob_raises_blob_unknown(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    digest = blob_digest(b"never stored")
    with pytest.raises(BlobUnknown, match=digest.encoded):
        await read_all(store, digest)


def test_delete_and_iter_digests(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    contents = [b"a", b"b", b"c", os.urandom(100)]
    for data in contents:
        store.put(blob_digest(data), data)
    assert sorted(store.iter_digests()) == sorted(blob_digest(d) for d in contents)
    store.delete(blob_digest(b"b"))
    store.delete(blob_digest(b"b"))  # deleting twice is not an error
    assert store.size(blob_digest(b"b")) is None
    assert sorted(store.iter_digests()) == sorted(blob_digest(d) for d in contents if d != b"b")


def test_sha512_blobs(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    digest = blob_digest(b"long hash", "sha512")
    store.put(digest, b"long hash")
    assert store.size(digest) == 9
    assert digest in list(store.iter_digests())


def test_a_second_instance_sees_the_same_blobs(tmp_path: Path, blob_factory: BlobFactory) -> None:
    data = b"shared by workers"
    blob_factory(tmp_path).put(blob_digest(data), data)
    assert blob_factory(tmp_path).size(blob_digest(data)) == len(data)


def test_read_small(tmp_path: Path, blob_factory: BlobFactory) -> None:
    store = blob_factory(tmp_path)
    data = b'{"layers": []}'
    digest = blob_digest(data)
    assert store.read_small(digest, 1024) is None  # absent
    store.put(digest, data)
    assert store.read_small(digest, len(data)) == data
    assert store.read_small(digest, len(data) - 1) is None  # over the limit: not read into memory
    empty = blob_digest(b"")
    store.put(empty, b"")
    assert store.read_small(empty, 10) == b""

"""LayerStore: unpack-once by diffID, safe under concurrency, adopting RUN uppers."""

from __future__ import annotations

import array
import asyncio
import fcntl
import io
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY, tree

from lamina.build.worker import LayerBlob, LayerError, LayerStore, write_layer
from lamina.build.worker.placement import FS_TOPDIR_FL, mark_top_directory
from lamina.build.worker.snapshot import OverlaySnapshotter

pytestmark = ROOT_ONLY


class CountingReader(io.RawIOBase):
    """A file whose reads are counted, to prove a second unpack reads nothing."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        return self._stream.readinto(buffer)


@pytest.fixture
def blob(tmp_path: Path, rootfs_dir: Path) -> LayerBlob:
    return write_layer(rootfs_dir, tmp_path / "blobs")


def test_unpack_once(tmp_path: Path, rootfs_dir: Path, blob: LayerBlob) -> None:
    store = LayerStore(tmp_path / "state")
    assert not store.has(blob.diff_id)
    path = store.unpack(blob.path, blob.media_type, blob.diff_id)
    assert path == tmp_path / "state" / "layers" / blob.diff_id.encoded
    assert store.has(str(blob.diff_id))
    assert tree(path) == tree(rootfs_dir)
    again = CountingReader(blob.path.read_bytes())
    assert store.unpack(again, blob.media_type, blob.diff_id) == path  # type: ignore[arg-type]
    assert again.reads == 0


def test_wrong_diff_id_leaves_no_layer(tmp_path: Path, blob: LayerBlob) -> None:
    store = LayerStore(tmp_path / "state")
    wrong = "sha256:" + "a" * 64
    with pytest.raises(LayerError, match="diffID mismatch"):
        store.unpack(blob.path, blob.media_type, wrong)
    assert not store.has(wrong)
    assert [p.name for p in store.layers.iterdir()] == [".locks"]
    with pytest.raises(LayerError, match="only sha256"):
        store.path("sha512:" + "0" * 128)


def test_concurrent_unpacks_of_one_layer(tmp_path: Path, rootfs_dir: Path, blob: LayerBlob) -> None:
    store = LayerStore(tmp_path / "state")
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(LayerStore(tmp_path / "state").unpack(blob.path, blob.media_type, blob.diff_id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert sorted(p.name for p in store.layers.iterdir()) == sorted([".locks", blob.diff_id.encoded])
    assert tree(results[0]) == tree(rootfs_dir)


async def test_unpack_async_from_chunks(tmp_path: Path, rootfs_dir: Path, blob: LayerBlob) -> None:
    data = blob.path.read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), 65536):
            yield data[offset : offset + 65536]

    store = LayerStore(tmp_path / "state")
    first, second = await asyncio.gather(
        store.unpack_async(chunks(), blob.media_type, blob.diff_id),
        store.unpack_async(chunks(), blob.media_type, blob.diff_id),
    )
    assert first == second == store.path(blob.diff_id)
    assert tree(first) == tree(rootfs_dir)


def test_adopt_moves_an_upper_and_strips_overlay_bookkeeping(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "f").write_text("f")
    os.setxattr(upper / "d", "trusted.overlay.impure", b"y")
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    blob = write_layer(upper, tmp_path / "blobs")
    store = LayerStore(tmp_path / "state")
    path = store.adopt(upper, blob.diff_id)
    assert path == store.path(blob.diff_id)
    assert not upper.exists()
    assert os.listxattr(path / "d") == ["trusted.overlay.opaque"]
    other = tmp_path / "other"
    other.mkdir()
    assert store.adopt(other, blob.diff_id) == path  # already there: the duplicate is dropped
    assert not other.exists()
    store.remove(blob.diff_id)
    assert not store.has(blob.diff_id)


def test_cleanup_partial_removes_dead_unpacks_only(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "state")
    dead = store.layers / ".tmp-unpack-abc-999999999-0a0b0c0d"
    live = store.layers / f".tmp-unpack-abc-{os.getpid()}-0a0b0c0d"
    dead.mkdir()
    live.mkdir()
    store.cleanup_partial()
    assert not dead.exists()
    assert live.exists()


def _inode_flags(path: Path, *, missing_ok: bool = False) -> int:
    """The inode's FS_IOC_GETFLAGS flags; 0 with ``missing_ok`` where the filesystem has none."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0, 0])
        fcntl.ioctl(fd, 0x80086601, flags, True)  # FS_IOC_GETFLAGS
        return flags[0]
    except OSError:
        if not missing_ok:
            raise
        return 0
    finally:
        os.close(fd)


def test_layers_dir_is_an_ext4_top_directory(tmp_path: Path, rootfs_dir: Path, blob: LayerBlob) -> None:
    """On ext4 ``layers/`` gets FS_TOPDIR_FL (unpack dirs placed in uncrowded block groups); elsewhere nothing."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True, check=True)
    store = LayerStore(tmp_path / "state")
    snapshots = OverlaySnapshotter(tmp_path / "state").root / "snapshots"  # RUN/COPY uppers: the same hint
    if fstype.stdout.strip() == "ext2/ext3":  # what stat -f calls ext4 (one magic number for the family)
        assert _inode_flags(store.layers) & FS_TOPDIR_FL
        assert _inode_flags(snapshots) & FS_TOPDIR_FL
        assert mark_top_directory(store.layers) is True  # already set: nothing to do
    else:  # e.g. overlayfs passes the flag to the inode below; tmpfs and xfs have none
        assert mark_top_directory(store.layers) is bool(_inode_flags(store.layers, missing_ok=True) & FS_TOPDIR_FL)
    dest = store.unpack(blob.path, blob.media_type, blob.diff_id)
    assert tree(dest) == tree(rootfs_dir)


def test_top_directory_flag_is_best_effort(tmp_path: Path) -> None:
    """tmpfs has no such flag: the store is made and works without it; a missing dir is no error either."""
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        assert mark_top_directory(shm) is False
        store = LayerStore(shm / "state")
        assert store.layers.is_dir() and not store.has("sha256:" + "0" * 64)
    finally:
        shutil.rmtree(shm)
    assert mark_top_directory(tmp_path / "missing") is False

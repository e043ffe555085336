"""extract_layer: overlay-format unpacking that verifies the diffID and refuses every escape."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY, tree

from lamina.build.worker import LayerError, extract_layer, extract_layer_async, write_layer
from lamina.oci import mediatypes

pytestmark = ROOT_ONLY  # chown, mknod and trusted.* xattrs need root

GZ = mediatypes.OCI_LAYER_GZIP


def build_tar(*entries: tuple[tarfile.TarInfo, bytes | None]) -> tuple[bytes, str]:
    """A gzip layer from hand-made entries, and its diffID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, **fields: object) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    if data is not None:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


MALICIOUS: dict[str, tuple[list[tuple], str]] = {
    "dotdot": ([entry("ok", data=b"1"), entry("../x", data=b"evil")], r"'\.\./x'.*'\.\.'"),
    "absolute": ([entry("/etc/evil", data=b"evil")], r"'/etc/evil'.*absolute"),
    "symlink then through it": (
        [entry("evil", tarfile.SYMTYPE, linkname="/etc"), entry("evil/passwd", data=b"root::0:0")],
        r"'evil/passwd'.*parent 'evil' is a symlink",
    ),
    "relative symlink out": (
        [entry("up", tarfile.SYMTYPE, linkname="../../.."), entry("up/tmp/x", data=b"evil")],
        r"'up/tmp/x'.*symlink",
    ),
    "hardlink out": ([entry("passwd", tarfile.LNKTYPE, linkname="../../etc/passwd")], r"'passwd'.*hard link"),
    "hardlink absolute": ([entry("shadow", tarfile.LNKTYPE, linkname="/etc/shadow")], r"'shadow'.*hard link"),
    "hardlink to nothing": ([entry("h", tarfile.LNKTYPE, linkname="missing")], r"'h'.*not a file of this layer"),
    "block device": ([entry("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)], r"'sda'.*device files"),
    "char device": ([entry("mem", tarfile.CHRTYPE, devmajor=1, devminor=1)], r"'mem'.*device files"),
    "overlay xattr": (
        [entry("d", tarfile.DIRTYPE, pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})],
        r"'d'.*overlay xattr",
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layers_are_refused_and_leave_nothing(tmp_path: Path, case: str) -> None:
    entries, message = MALICIOUS[case]
    blob, diff_id = build_tar(*entries)
    work = tmp_path / "work"
    work.mkdir()
    before = set(os.listdir("/etc"))
    with pytest.raises(LayerError, match=message):
        extract_layer(io.BytesIO(blob), GZ, work / "layer", expected_diff_id=diff_id)
    assert os.listdir(work) == []  # neither the destination nor a temp dir remains
    assert set(os.listdir("/etc")) == before
    assert not (tmp_path / "x").exists()


def test_diff_id_mismatch_is_refused(tmp_path: Path) -> None:
    blob, _ = build_tar(entry("a", data=b"1"))
    with pytest.raises(LayerError, match="diffID mismatch: expected sha256:0000"):
        extract_layer(io.BytesIO(blob), GZ, tmp_path / "layer", expected_diff_id="sha256:" + "0" * 64)
    assert os.listdir(tmp_path) == []


def test_truncated_and_garbage_streams_are_refused(tmp_path: Path) -> None:
    blob, diff_id = build_tar(entry("a", data=os.urandom(200_000)))
    with pytest.raises(LayerError, match="corrupt or truncated"):
        extract_layer(io.BytesIO(blob[: len(blob) // 2]), GZ, tmp_path / "l1", expected_diff_id=diff_id)
    with pytest.raises(LayerError):
        extract_layer(io.BytesIO(b"not a gzip stream at all"), GZ, tmp_path / "l2", expected_diff_id=diff_id)
    assert os.listdir(tmp_path) == []


def test_destination_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "x").write_text("x")
    blob, diff_id = build_tar(entry("a", data=b"1"))
    with pytest.raises(LayerError, match="not an empty directory"):
        extract_layer(io.BytesIO(blob), GZ, tmp_path / "layer", expected_diff_id=diff_id)


def test_oci_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    blob, diff_id = build_tar(
        entry("etc", tarfile.DIRTYPE, mode=0o755),
        entry("etc/.wh.passwd", data=b""),
        entry("var", tarfile.DIRTYPE, mode=0o755),
        entry("var/.wh..wh..opq", data=b""),
        entry("var/kept", data=b"k"),
        entry("usr/lib/deep", data=b"implicit parents"),
    )
    got = extract_layer(io.BytesIO(blob), GZ, tmp_path / "layer", expected_diff_id=diff_id)
    assert str(got) == diff_id
    layer = tmp_path / "layer"
    st = os.lstat(layer / "etc" / "passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (layer / "etc" / ".wh.passwd").exists()
    assert os.getxattr(layer / "var", "trusted.overlay.opaque") == b"y"
    assert not (layer / "var" / ".wh..wh..opq").exists()
    assert (layer / "var" / "kept").read_bytes() == b"k"
    assert (layer / "usr" / "lib" / "deep").read_bytes() == b"implicit parents"


def test_round_trip_keeps_the_tree(tmp_path: Path, rootfs_dir: Path) -> None:
    src = rootfs_dir
    (src / "data").mkdir()
    (src / "data" / "setuid").write_bytes(b"x" * 5000)
    os.chmod(src / "data" / "setuid", 0o4750)
    os.chown(src / "data" / "setuid", 1000, 1000)
    os.link(src / "data" / "setuid", src / "data" / "setuid.link")
    os.setxattr(src / "data", "user.k", b"v")
    os.mkfifo(src / "data" / "fifo")
    os.chmod(src / "tmp", 0o1777)
    os.utime(src / "data" / "setuid", (1_000_000, 1_000_000))
    os.utime(src / "data", (2_000_000, 2_000_000))
    for compression in ("gzip", "zstd", "uncompressed"):
        blob = write_layer(src, tmp_path / "blobs", compression=compression)  # type: ignore[arg-type]
        dest = tmp_path / f"unpacked-{compression}"
        with open(blob.path, "rb") as fh:
            assert extract_layer(fh, blob.media_type, dest, expected_diff_id=blob.diff_id) == blob.diff_id
        assert tree(dest) == tree(src)
        assert os.lstat(dest / "data" / "setuid").st_ino == os.lstat(dest / "data" / "setuid.link").st_ino


async def test_extract_while_chunks_arrive(tmp_path: Path, rootfs_dir: Path) -> None:
    blob = write_layer(rootfs_dir, tmp_path / "blobs", compression="zstd")
    data = blob.path.read_bytes()
    consumed = []

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), 7000):
            await asyncio.sleep(0)
            consumed.append(offset)
            yield data[offset : offset + 7000]

    got = await extract_layer_async(chunks(), blob.media_type, tmp_path / "layer", expected_diff_id=blob.diff_id)
    assert got == blob.diff_id
    assert len(consumed) > 10
    assert tree(tmp_path / "layer") == tree(rootfs_dir)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
async def test_extract_from_uneven_chunks(tmp_path: Path, rootfs_dir: Path, compression: str) -> None:
    """Chunks of every size around the decoders' reads (1 byte to over 1 MiB, empty ones too) give the same layer."""
    blob = write_layer(rootfs_dir, tmp_path / "blobs", compression=compression)  # type: ignore[arg-type]
    data = blob.path.read_bytes()
    sizes = [1, 0, 3, 511, 4096, 65537, 131072, 1 << 20 | 5]

    async def chunks() -> AsyncIterator[bytes]:
        offset, i = 0, 0
        while offset < len(data):
            size = sizes[i % len(sizes)]
            i += 1
            yield data[offset : offset + size]
            offset += size

    got = await extract_layer_async(chunks(), blob.media_type, tmp_path / "layer", expected_diff_id=blob.diff_id)
    assert got == blob.diff_id
    assert tree(tmp_path / "layer") == tree(rootfs_dir)


async def test_chunk_pipe_reads(tmp_path: Path) -> None:
    """The pipe's read(n), read(-1) and readinto across chunk boundaries return the bytes in order, b'' at the end."""
    from lamina.build.worker.extract import _ChunkPipe

    pieces = [b"abc", b"", b"defgh", b"i", b"jklmnopqrstuvwxyz"]

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    def consume(pipe: _ChunkPipe) -> list[bytes]:
        got = [pipe.read(2), pipe.read(5), pipe.read(0)]
        buffer = bytearray(4)
        n = pipe.readinto(buffer)
        got.append(bytes(buffer[:n]))
        got.append(pipe.read(-1))
        got.append(pipe.read(10))
        return got

    got = await asyncio.to_thread(consume, _ChunkPipe(chunks(), asyncio.get_running_loop()))
    assert got == [b"ab", b"c", b"", b"defg", b"hijklmnopqrstuvwxyz", b""]
    assert b"".join(got) == b"".join(pieces)


async def test_async_extract_refuses_bad_diff_id(tmp_path: Path) -> None:
    blob, _ = build_tar(entry("a", data=b"1"))

    async def chunks() -> AsyncIterator[bytes]:
        yield blob[:10]
        yield b""
        yield blob[10:]

    with pytest.raises(LayerError, match="diffID mismatch"):
        await extract_layer_async(chunks(), GZ, tmp_path / "layer", expected_diff_id="sha256:" + "1" * 64)
    assert os.listdir(tmp_path) == []


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    blob, diff_id = build_tar(
        entry("x", tarfile.DIRTYPE, mode=0o755),
        entry("x/child", data=b"c"),
        entry("x", data=b"now a file"),
        entry("y", data=b"first"),
        entry("y", data=b"second"),
    )
    extract_layer(io.BytesIO(blob), GZ, tmp_path / "layer", expected_diff_id=diff_id)
    assert (tmp_path / "layer" / "x").read_bytes() == b"now a file"
    assert (tmp_path / "layer" / "y").read_bytes() == b"second"


def raw_layer(tar_bytes: bytes) -> tuple[io.BytesIO, str]:
    return io.BytesIO(tar_bytes), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_in_every_tar_dialect(tmp_path: Path, fmt: int) -> None:
    long_dir = "/".join(["d" * 60] * 3)  # 182 characters: needs pax, GNU 'L' or the ustar prefix
    target = long_dir + "/file"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo(target)
        info.size = 5
        info.mtime = 1234567890
        tar.addfile(info, io.BytesIO(b"hello"))
        link = tarfile.TarInfo(long_dir + "/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "x" * (150 if fmt != tarfile.USTAR_FORMAT else 90)
        tar.addfile(link)
    stream, diff_id = raw_layer(raw.getvalue())
    extract_layer(stream, mediatypes.OCI_LAYER, tmp_path / "layer", expected_diff_id=diff_id)
    assert (tmp_path / "layer" / target).read_bytes() == b"hello"
    assert os.stat(tmp_path / "layer" / target).st_mtime == 1234567890
    assert os.readlink(tmp_path / "layer" / long_dir / "link") == link.linkname


def test_tar_without_end_of_archive_blocks_is_accepted(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    data = raw.getvalue()
    data = data[:1024]  # header + one data block, no zero blocks (as some writers do)
    stream, diff_id = raw_layer(data)
    extract_layer(stream, mediatypes.OCI_LAYER, tmp_path / "layer", expected_diff_id=diff_id)
    assert (tmp_path / "layer" / "a").read_bytes() == b"1"


def test_tar_ending_right_after_the_last_data_is_accepted_as_go_reads_it(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("a", b"first"), ("b", b"hi\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    end = data.index(b"hi\n") + 3  # no padding, no end-of-archive blocks: what umoci 0.4 writes
    stream, diff_id = raw_layer(data[:end])
    extract_layer(stream, mediatypes.OCI_LAYER, tmp_path / "layer", expected_diff_id=diff_id)
    assert (tmp_path / "layer" / "b").read_bytes() == b"hi\n"
    assert (tmp_path / "layer" / "a").read_bytes() == b"first"
    for cut in (end - 1, end + 100):  # inside the data, inside the padding: truncated
        stream, diff_id = raw_layer(data[:cut])
        with pytest.raises(LayerError, match="unexpected end of the tar stream"):
            extract_layer(stream, mediatypes.OCI_LAYER, tmp_path / f"cut{cut}", expected_diff_id=diff_id)
    assert sorted(os.listdir(tmp_path)) == ["layer"]


def test_truncated_file_data_and_bad_checksums_are_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big")
        info.size = 4096
        tar.addfile(info, io.BytesIO(b"x" * 4096))
    data = raw.getvalue()
    stream, diff_id = raw_layer(data[:2000])
    with pytest.raises(LayerError, match="unexpected end of the tar stream"):
        extract_layer(stream, mediatypes.OCI_LAYER, tmp_path / "l1", expected_diff_id=diff_id)
    corrupt = bytearray(data)
    corrupt[0:3] = b"zzz"  # name changed, checksum no longer matches
    stream, diff_id = raw_layer(bytes(corrupt))
    with pytest.raises(LayerError, match="invalid tar header"):
        extract_layer(stream, mediatypes.OCI_LAYER, tmp_path / "l2", expected_diff_id=diff_id)
    assert os.listdir(tmp_path) == []


def test_directory_replaced_by_a_symlink_does_not_leak_its_metadata(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    outside.chmod(0o700)
    blob, diff_id = build_tar(
        entry("d", tarfile.DIRTYPE, mode=0o777),
        entry("d/sub", tarfile.DIRTYPE, mode=0o777),
        entry("d", tarfile.SYMTYPE, linkname=str(outside)),
        entry(".wh..", data=b""),
    )
    with pytest.raises(LayerError, match=r"'\.wh\.\.'.*whiteout without a name"):
        extract_layer(io.BytesIO(blob), GZ, tmp_path / "layer", expected_diff_id=diff_id)
    blob, diff_id = build_tar(
        entry("d", tarfile.DIRTYPE, mode=0o777),
        entry("d/sub", tarfile.DIRTYPE, mode=0o777),
        entry("d", tarfile.SYMTYPE, linkname=str(outside)),
    )
    extract_layer(io.BytesIO(blob), GZ, tmp_path / "layer", expected_diff_id=diff_id)
    assert os.readlink(tmp_path / "layer" / "d") == str(outside)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700
    assert stat.S_IMODE((outside / "sub").stat().st_mode) == 0o755


async def test_cancelled_download_leaves_nothing(tmp_path: Path, rootfs_dir: Path) -> None:
    blob = write_layer(rootfs_dir, tmp_path / "blobs")
    data = blob.path.read_bytes()

    async def stalled() -> AsyncIterator[bytes]:
        yield data[: len(data) // 3]
        await asyncio.sleep(3600)  # the network stalls
        yield data[len(data) // 3 :]

    work = tmp_path / "work"
    task = asyncio.create_task(
        extract_layer_async(stalled(), blob.media_type, work / "layer", expected_diff_id=blob.diff_id)
    )
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert os.listdir(work) == []

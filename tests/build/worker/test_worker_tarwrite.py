"""write_layer: deterministic, standard, streaming OCI layer blobs from overlay-format diff dirs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from worker_helpers import needs_root, tar_members, tar_names

from lamina.build.worker import open_layer, write_layer
from lamina.oci import mediatypes

EPOCH = 1_600_000_000
# Only root can give files away; unprivileged runs check that their own ids are kept instead.
OWNER = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())


def make_tree(root: Path) -> Path:
    (root / "b" / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "b" / "sub" / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "b" / "z").write_text("z")
    (root / "b" / "link").symlink_to("../a.txt")
    os.link(root / "a.txt", root / "hard.txt")
    (root / "exec.sh").write_text("#!/bin/sh\n")
    (root / "exec.sh").chmod(0o4755)
    os.chown(root / "b" / "z", *OWNER)
    os.setxattr(root / "b" / "z", "user.note", b"\xff\x00bin")
    return root


def test_same_tree_same_digest_with_source_date_epoch(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "diff")
    first = write_layer(tree, tmp_path / "out1", source_date_epoch=EPOCH)
    os.utime(tree / "a.txt", (EPOCH + 99, EPOCH + 99))  # later than the epoch: clamped away
    second = write_layer(tree, tmp_path / "out2", source_date_epoch=EPOCH)
    assert first.digest == second.digest
    assert first.diff_id == second.diff_id
    assert first.path.name == first.digest.encoded
    assert first.size == first.path.stat().st_size
    assert hashlib.sha256(first.path.read_bytes()).hexdigest() == first.digest.encoded
    third = write_layer(tree, tmp_path / "out3", source_date_epoch=EPOCH - 10)
    assert third.diff_id != first.diff_id
    assert not [p for p in (tmp_path / "out1").iterdir() if p.name.startswith(".tmp")]


def test_entries_sorted_normalised_and_linked(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "diff")
    os.utime(tree / "b" / "z", (100, 100))  # older than the epoch: kept
    blob = write_layer(tree, tmp_path / "out", source_date_epoch=EPOCH)
    members = {m.name: m for m in tar_members(blob.path)}
    assert list(members) == ["a.txt", "b", "b/link", "b/sub", "b/sub/big.bin", "b/z", "exec.sh", "hard.txt"]
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    assert (members["b/z"].uid, members["b/z"].gid) == OWNER
    assert members["b/z"].mtime == 100
    assert members["a.txt"].mtime == EPOCH
    assert members["exec.sh"].mode == 0o4755
    assert members["b/link"].issym() and members["b/link"].linkname == "../a.txt"
    assert members["hard.txt"].islnk() and members["hard.txt"].linkname == "a.txt"
    assert members["b"].isdir()
    assert members["b/z"].pax_headers["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") == b"\xff\x00bin"
    raw = gzip.decompress(blob.path.read_bytes())
    assert b"b/\x00" in raw  # directories are written with a trailing slash, as Docker does
    assert b"atime" not in raw and b"ctime" not in raw


def test_compressions_are_standard_streams(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "diff")
    plain = write_layer(tree, tmp_path / "p", compression="uncompressed", source_date_epoch=EPOCH)
    gz = write_layer(tree, tmp_path / "g", compression="gzip", source_date_epoch=EPOCH)
    zst = write_layer(tree, tmp_path / "z", compression="zstd", source_date_epoch=EPOCH)
    assert plain.digest == plain.diff_id
    assert gz.diff_id == zst.diff_id == plain.diff_id
    assert (plain.media_type, gz.media_type, zst.media_type) == (
        mediatypes.OCI_LAYER,
        mediatypes.OCI_LAYER_GZIP,
        mediatypes.OCI_LAYER_ZSTD,
    )
    raw = plain.path.read_bytes()
    # Independent decoders: the gzip and zstd command-line tools.
    assert subprocess.run(["gzip", "-dc", str(gz.path)], capture_output=True, check=True).stdout == raw
    assert subprocess.run(["zstd", "-dc", str(zst.path)], capture_output=True, check=True).stdout == raw
    for blob in (plain, gz, zst):
        with open_layer(blob.path, blob.media_type) as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == blob.diff_id.encoded
    again = write_layer(tree, tmp_path / "z2", compression="zstd", source_date_epoch=EPOCH)
    assert again.digest == zst.digest
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst.path.read_bytes()) == raw


def test_levels_change_the_blob_not_the_diff_id(tmp_path: Path) -> None:
    tree = tmp_path / "diff"
    tree.mkdir()
    (tree / "text").write_bytes(b"lorem ipsum dolor sit amet " * 40000)
    fast = write_layer(tree, tmp_path / "a", level=0, source_date_epoch=EPOCH)
    best = write_layer(tree, tmp_path / "b", level=9, source_date_epoch=EPOCH)
    assert fast.diff_id == best.diff_id
    assert best.size < fast.size


def test_open_layer_reads_multi_member_gzip_and_file_objects(tmp_path: Path) -> None:
    data = gzip.compress(b"one", mtime=0) + gzip.compress(b"two", mtime=0)
    with open_layer(io.BytesIO(data), mediatypes.DOCKER_LAYER_GZIP) as stream:
        assert stream.read() == b"onetwo"
    with pytest.raises(ValueError, match="unsupported layer media type 'text/plain'"):
        open_layer(io.BytesIO(b""), "text/plain")


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown compression 'lz4'"):
        write_layer(tmp_path, tmp_path / "out", compression="lz4")  # type: ignore[arg-type]


@needs_root
def test_overlay_whiteouts_and_opaque_dirs_become_oci_entries(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "gone", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "var").mkdir()
    os.setxattr(upper / "var", "trusted.overlay.opaque", b"y")
    os.setxattr(upper / "var", "trusted.overlay.origin", b"junk")
    (upper / "var" / "new").write_text("n")
    blob = write_layer(upper, tmp_path / "out", source_date_epoch=EPOCH)
    members = {m.name: m for m in tar_members(blob.path)}
    assert tar_names(blob.path) == ["etc", "etc/.wh.gone", "var", "var/.wh..wh..opq", "var/new"]
    assert members["etc/.wh.gone"].isreg() and members["etc/.wh.gone"].size == 0
    assert members["var/.wh..wh..opq"].isreg()
    assert not any("overlay" in key for m in members.values() for key in m.pax_headers)


def test_unchanged_files_stream_without_loading_in_memory(tmp_path: Path) -> None:
    """A file larger than the flush threshold goes through in chunks and still round-trips."""
    tree = tmp_path / "diff"
    tree.mkdir()
    payload = os.urandom(5 << 20)
    (tree / "large").write_bytes(payload)
    blob = write_layer(tree, tmp_path / "out", compression="zstd")
    with open_layer(blob.path, blob.media_type) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == payload

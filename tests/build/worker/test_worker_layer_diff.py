"""write_layer with the stack the diff was made on: BuildKit's overlay differ rules for what a layer holds.

Lowers and uppers are built by hand in overlay format (0/0 character devices for deletions,
``trusted.overlay.opaque`` on replaced directories), as the kernel leaves them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from pathlib import Path

import pytest
from worker_helpers import needs_root, tar_members, tar_names

from lamina.build.worker import CopySnapshotter, OverlaySnapshotter, write_layer
from lamina.build.worker.lowerview import LowerView, same_entry

MTIME = 1_600_000_000


def _file(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    os.utime(path, (MTIME, MTIME))
    return path


def _whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def _opaque_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")
    return path


def _copy_up(lower: Path, upper: Path, rel: str) -> Path:
    """What overlayfs does before a hardlink or chmod: the file, its metadata and its mtime, in upper."""
    (upper / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(lower / rel, upper / rel)
    return upper / rel


@needs_root
def test_a_replaced_directory_gets_one_whiteout_per_vanished_child_never_an_opaque_marker(tmp_path: Path) -> None:
    base, mid, upper = tmp_path / "base", tmp_path / "mid", tmp_path / "upper"
    for name in ("a", "sub/b", "zz"):
        _file(base / "d1" / name, name)
    _file(base / "f1", "file")  # becomes a directory
    _file(mid / "d1" / "m", "from a middle layer")
    _whiteout(mid / "d1" / "zz")  # already deleted below the step: no whiteout again
    _file(_opaque_dir(upper / "d1") / "new", "n")
    (upper / "d1" / "sub").mkdir()  # inside the replaced dir: its old children vanish too
    _file(upper / "d1" / "sub" / "c", "c")
    _file(_opaque_dir(upper / "f1") / "inside", "i")
    _whiteout(upper / "never-existed")
    blob = write_layer(upper, tmp_path / "out", lowers=[mid, base])
    assert tar_names(blob.path) == [
        "d1", "d1/.wh.a", "d1/.wh.m", "d1/new", "d1/sub", "d1/sub/.wh.b", "d1/sub/c", "f1", "f1/inside",
    ]  # fmt: skip
    whiteout = {m.name: m for m in tar_members(blob.path)}["d1/.wh.a"]
    assert (whiteout.isreg(), whiteout.mode, whiteout.uid, whiteout.gid, whiteout.size) == (True, 0, 0, 0, 0)


@needs_root
def test_without_lowers_opaque_dirs_keep_the_oci_marker(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _file(_opaque_dir(upper / "d1") / "new", "n")
    blob = write_layer(upper, tmp_path / "out")
    assert tar_names(blob.path) == ["d1", "d1/.wh..wh..opq", "d1/new"]


@needs_root
def test_copied_up_files_stay_out_and_a_link_to_one_is_a_plain_copy(tmp_path: Path) -> None:
    base, upper = tmp_path / "base", tmp_path / "upper"
    _file(base / "data" / "x", "x\n")
    _file(base / "etc" / "passwd", "root\n")
    _file(base / "etc" / "group", "g\n")
    os.link(_copy_up(base, upper, "data/x"), upper / "data" / "x2")  # ln /data/x /data/x2
    os.link(_copy_up(base, upper, "etc/passwd"), upper / "passwd-link")  # ln /etc/passwd /passwd-link
    _copy_up(base, upper, "etc/group").chmod(0o600)  # chmod 600 /etc/group: a real change
    blob = write_layer(upper, tmp_path / "out", lowers=[base])
    members = tar_members(blob.path)
    assert [m.name for m in members] == ["data", "data/x2", "etc", "etc/group", "passwd-link"]
    assert all(m.isreg() or m.isdir() for m in members)
    assert {m.name: m.mode for m in members}["etc/group"] == 0o600


@needs_root
def test_new_hardlink_groups_are_one_file_and_links_to_the_first_path(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _file(upper / "data" / "a", "one\n")
    os.link(upper / "data" / "a", upper / "data" / "b")
    os.link(upper / "data" / "a", upper / "c")
    blob = write_layer(upper, tmp_path / "out", lowers=[tmp_path])
    members = {m.name: m for m in tar_members(blob.path)}
    assert list(members) == ["c", "data", "data/a", "data/b"]
    assert members["c"].isreg() and members["data/a"].linkname == "c" and members["data/b"].linkname == "c"


@needs_root
def test_layers_are_plain_ustar_ending_in_two_zero_blocks(tmp_path: Path) -> None:
    base, upper = tmp_path / "base", tmp_path / "upper"
    _file(base / "d" / "gone", "g")
    _whiteout(upper / "d" / "gone")
    _file(upper / "d" / "new", "n")
    raw = gzip.decompress(write_layer(upper, tmp_path / "out", lowers=[base]).path.read_bytes())
    headers = [raw[i : i + 512] for i in range(0, len(raw) - 1024, 512) if raw[i + 257 : i + 263] == b"ustar\0"]
    assert len(headers) == 3 and not any(h[156:157] in (b"x", b"g") for h in headers)  # no PAX records
    assert all(h[265:297].strip(b"\0") == b"" and h[297:329].strip(b"\0") == b"" for h in headers)  # no names
    assert raw[-1024:] == b"\0" * 1024 and raw[-1536:-1024] != b"\0" * 512


def test_same_entry_is_buildkits_same_dirent(tmp_path: Path) -> None:
    a, b = _file(tmp_path / "a", "same"), _file(tmp_path / "b", "same")
    assert same_entry(str(a), a.lstat(), str(b), b.lstat())
    _file(b, "diff")  # same size and whole-second mtime: the content decides
    assert not same_entry(str(a), a.lstat(), str(b), b.lstat())
    os.utime(b, ns=(MTIME * 10**9 + 5, MTIME * 10**9 + 5))
    _file(a, "diff")
    assert not same_entry(str(a), a.lstat(), str(b), b.lstat())  # sub-second mtimes differ
    b.chmod(0o600)
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    os.utime(tmp_path / "d2", (1, 1))  # a directory's mtime does not count
    assert same_entry(str(tmp_path / "d1"), (tmp_path / "d1").lstat(), str(tmp_path / "d2"), (tmp_path / "d2").lstat())


def test_lower_view_merges_layers_top_first(tmp_path: Path) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    _file(bottom / "d" / "a", "a")
    _file(bottom / "d" / "b", "b")
    _file(bottom / "e" / "hidden", "h")
    _file(bottom / "f", "f")
    _file(top / "d" / "c", "c")
    (top / "e").mkdir()
    os.setxattr(top / "e", "user.overlay.opaque", b"y")
    _file(top / "f" / "now-a-dir", "x")
    view = LowerView([top, bottom])
    assert view.children("d") == {"a", "b", "c"}
    assert view.children("e") == set()
    assert view.children("f") == {"now-a-dir"}
    assert view.lookup("d/a") is not None and view.lookup("e/hidden") is None and view.lookup("nothing") is None


@needs_root
@pytest.mark.parametrize("kind", ["overlay", "copy"])
def test_both_snapshotters_break_lower_links_as_overlay_copy_up_does(kind: str, tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    _file(lower / "data" / "a", "one\n")
    os.link(lower / "data" / "a", lower / "data" / "b")
    os.link(lower / "data" / "a", lower / "c")
    _file(lower / "data" / "x", "two\n")
    snapshotter = OverlaySnapshotter(tmp_path / "state") if kind == "overlay" else CopySnapshotter(tmp_path / "state")
    with snapshotter.prepare([lower], mountpoints=()) as snap:
        os.link(snap.rootfs / "data" / "x", snap.rootfs / "data" / "x2")  # ln /data/x /data/x2
        (snap.rootfs / "data" / "b").chmod(0o640)  # one path of the lower trio
        assert (snap.rootfs / "c").stat().st_mode & 0o777 == 0o644
    members = {m.name: m for m in tar_members(write_layer(snap.upper, tmp_path / "out", lowers=[lower]).path)}
    snap.discard()
    assert list(members) == ["data", "data/b", "data/x2"]
    assert members["data/b"].isreg() and members["data/b"].mode == 0o640 and members["data/x2"].isreg()


def test_long_names_split_as_go_does_and_only_what_ustar_cannot_hold_uses_pax(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    deep = "node_modules/" * 9 + "pkg"  # 120 bytes: a ustar prefix, split at the last '/' in 156 bytes
    _file(upper / deep / "index.js", "x")
    _file(upper / ("n" * 120), "too long to split")
    _file(upper / "café.txt", "non-ASCII")
    raw = gzip.decompress(write_layer(upper, tmp_path / "out").path.read_bytes())
    members = {m.name: m for m in tar_members(write_layer(upper, tmp_path / "out2").path)}
    index = members[deep + "/index.js"]
    header = raw[index.offset : index.offset + 512]
    assert header[345:500].rstrip(b"\0") == deep.encode() and header[0:100].rstrip(b"\0") == b"index.js"
    assert not index.pax_headers
    assert members["n" * 120].pax_headers == {"path": "n" * 120}
    assert members["café.txt"].pax_headers == {"path": "café.txt"}

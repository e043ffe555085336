"""Hostile inputs: symlinks in the image or a source stage, '..' sources, tar entries that climb out.

Every test keeps a sentinel directory next to the rootfs and checks nothing was written there.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from ctx_helpers import listing, make_tree

from lamina.build.filecopy import CopyError, apply_copy
from lamina.build.ops import CopyStep


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "outside", {"passwd": "host"})


def _untouched(outside: Path) -> None:
    assert listing(outside) == {"passwd": "f:host"}


def test_dest_symlinks_in_the_image_resolve_inside_the_rootfs(tmp_path: Path, outside: Path) -> None:
    ctx = make_tree(tmp_path / "ctx", {"f": "payload"})
    rootfs = make_tree(tmp_path / "rootfs", {"up": "-> ../../../../../..", "abs": f"-> {outside}",
                                             "slash": "-> /", "etc": f"-> {outside}"})
    for dest in ("/up/x", "/abs/passwd", "/slash/y", "/etc/passwd", "/up/etc/z/"):
        apply_copy(CopyStep(sources=("f",), dest=dest), source_root=ctx, rootfs=rootfs)
    _untouched(outside)
    assert (rootfs / "x").read_text() == "payload"  # /up -> / inside the rootfs
    assert (rootfs / "y").read_text() == "payload"
    assert (rootfs / str(outside).lstrip("/") / "passwd").read_text() == "payload"  # re-rooted absolute link
    assert (rootfs / "etc").is_symlink()


def test_dot_dot_sources_are_cleaned_into_the_context(tmp_path: Path, outside: Path) -> None:
    ctx = make_tree(tmp_path / "ctx", {"f": "in"})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with pytest.raises(CopyError, match=r"stat \.\./outside/passwd"):
        apply_copy(CopyStep(sources=("../outside/passwd",), dest="/x"), source_root=ctx, rootfs=rootfs)
    apply_copy(CopyStep(sources=("../../f",), dest="/x"), source_root=ctx, rootfs=rootfs)
    assert (rootfs / "x").read_text() == "in"


def test_from_stage_symlinks_cannot_read_the_host(tmp_path: Path, outside: Path) -> None:
    stage = make_tree(tmp_path / "stage", {"leak": f"-> {outside}/passwd", "dir/leak": "-> ../../../../outside/passwd",
                                           "ok": "fine"})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with pytest.raises(CopyError, match="file not found in source stage: stat leak"):
        apply_copy(CopyStep(sources=("leak",), dest="/x", from_stage=0), source_root=stage, rootfs=rootfs)
    apply_copy(CopyStep(sources=("dir",), dest="/d/", from_stage=0), source_root=stage, rootfs=rootfs)
    assert os.readlink(rootfs / "d/leak") == "../../../../outside/passwd"  # copied as a link, never followed


def _tar(entries: list[tuple[str, str, str]]) -> bytes:
    """(name, type, data-or-linkname) -> tar bytes; type is f(ile), d(ir), s(ymlink), h(ardlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "s":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            else:
                payload = data.encode()
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("../escape.txt", "f", "x")], "'../escape.txt' points outside the destination"),
        ([("a/../../escape.txt", "f", "x")], "points outside the destination"),
        ([("link", "s", "../../.."), ("link/outside/passwd", "f", "x")], "is a symlink to '../../..', outside"),
        ([("hard", "h", "../../outside/passwd")], "is a hard link to '../../outside/passwd', outside"),
        ([("hard", "h", "missing")], "which does not exist"),
    ],
)
def test_add_refuses_archives_that_climb_out(
    tmp_path: Path, outside: Path, entries: list[tuple[str, str, str]], message: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(_tar(entries))
    rootfs = make_tree(tmp_path / "rootfs", {"dest/": None})
    with pytest.raises(CopyError, match=message):
        apply_copy(CopyStep(sources=("evil.tar",), dest="/dest/", is_add=True), source_root=ctx, rootfs=rootfs)
    _untouched(outside)


def test_add_archive_symlinks_resolve_inside_the_destination(tmp_path: Path, outside: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    entries = [("root", "s", "/"), ("root/etc/written", "f", "in dest"), ("abs", "s", str(outside)),
               ("abs/passwd", "f", "not the host")]
    (ctx / "a.tar").write_bytes(_tar(entries))
    rootfs = make_tree(tmp_path / "rootfs", {"srv/": None})
    apply_copy(CopyStep(sources=("a.tar",), dest="/srv", is_add=True), source_root=ctx, rootfs=rootfs)
    _untouched(outside)
    assert (rootfs / "srv/etc/written").read_text() == "in dest"  # "/" is the extraction dir, as in Docker's chroot
    assert (rootfs / "srv" / str(outside).lstrip("/") / "passwd").read_text() == "not the host"


def test_writes_never_follow_a_symlink_swapped_into_a_resolved_path(tmp_path: Path, outside: Path) -> None:
    """O_NOFOLLOW at every component: a path that stops being a directory fails instead of escaping."""
    from lamina.build.filecopy import RootFS

    rootfs = make_tree(tmp_path / "rootfs", {"d/": None})
    root = RootFS(rootfs)
    resolved = root.resolve("/d/file")
    assert resolved == "d/file"
    (rootfs / "d").rmdir()
    os.symlink(outside, rootfs / "d")  # swapped after resolution
    with pytest.raises(CopyError, match="cannot open /d"):
        root.open_dir("d")
    _untouched(outside)

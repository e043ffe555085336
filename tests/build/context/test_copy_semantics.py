"""COPY parity: Docker's documented directory, trailing-slash, glob, mode and ownership behaviour.

Each test copies a real context into a plain directory standing in for the mounted rootfs and looks at
the result on disk.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from ctx_helpers import listing, make_tree

from lamina.build.filecopy import CopyError, apply_copy
from lamina.build.ops import CopyStep

IS_ROOT = os.geteuid() == 0


def copy(ctx: Path, rootfs: Path, *sources: str, dest: str, ignore: tuple[str, ...] = (), **kw: Any) -> None:
    rootfs.mkdir(exist_ok=True)
    step = CopyStep(sources=sources, dest=dest, **kw)
    apply_copy(step, source_root=ctx, rootfs=rootfs, context_ignore=ignore, resolve_owner=None)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "ctx", {
        "dir/a.txt": "A", "dir/sub/b.txt": "B", "dir/empty/": None,
        "file.txt": "F", "other.txt": "O", "notes.md": "N",
        "dir2/c.txt": "C",
    })


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "rootfs", {"existing/keep": "K", "etc/hostname": "h"})


def test_directory_source_copies_its_contents(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "dir", dest="/app/")
    assert listing(rootfs / "app") == {"a.txt": "f:A", "sub": "d", "sub/b.txt": "f:B", "empty": "d"}


def test_directory_source_to_missing_dest_without_slash_creates_it(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "dir/", dest="/app")
    assert (rootfs / "app/sub/b.txt").read_text() == "B"
    assert not (rootfs / "app/dir").exists()


def test_directory_merges_into_existing_directory(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "dir", dest="/existing")
    assert sorted(os.listdir(rootfs / "existing")) == ["a.txt", "empty", "keep", "sub"]


def test_file_to_trailing_slash_keeps_its_name(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/x/y/")
    assert (rootfs / "x/y/file.txt").read_text() == "F"


def test_file_to_path_without_slash_is_renamed(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/x/renamed")
    assert (rootfs / "x/renamed").read_text() == "F"
    assert (rootfs / "x/renamed").is_file()


def test_file_to_existing_directory_without_slash_goes_inside(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/existing")
    assert (rootfs / "existing/file.txt").read_text() == "F"


def test_file_replaces_existing_file(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/etc/hostname")
    assert (rootfs / "etc/hostname").read_text() == "F"


def test_relative_dest_uses_workdir_and_dot_means_directory(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", "other.txt", dest="/srv/app/.", workdir="/srv/app")
    assert sorted(os.listdir(rootfs / "srv/app")) == ["file.txt", "other.txt"]
    copy(ctx, rootfs, "notes.md", dest="docs/", workdir="/srv/app")
    assert (rootfs / "srv/app/docs/notes.md").exists()


def test_several_sources_need_a_trailing_slash(ctx: Path, rootfs: Path) -> None:
    with pytest.raises(CopyError, match="more than one source file, the destination must be a directory and end"):
        copy(ctx, rootfs, "file.txt", "other.txt", dest="/multi")
    with pytest.raises(CopyError, match="more than one source file"):
        copy(ctx, rootfs, "*.txt", dest="/multi")  # a glob matching two files
    copy(ctx, rootfs, "file.txt", "other.txt", dest="/multi/")
    assert sorted(os.listdir(rootfs / "multi")) == ["file.txt", "other.txt"]


def test_glob_matching_one_file_may_rename(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "*.md", dest="/readme")
    assert (rootfs / "readme").read_text() == "N"


def test_glob_of_directories_copies_each_ones_contents(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "dir*", dest="/flat/")
    assert sorted(os.listdir(rootfs / "flat")) == ["a.txt", "c.txt", "empty", "sub"]


def test_glob_matching_nothing_is_allowed_like_buildkit(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "*.nothing", "file.txt", dest="/g/")
    assert os.listdir(rootfs / "g") == ["file.txt"]


def test_missing_source_is_an_error_naming_it(ctx: Path, rootfs: Path) -> None:
    with pytest.raises(CopyError) as info:
        copy(ctx, rootfs, "nope.txt", dest="/x/")
    assert str(info.value) == (
        "COPY failed: file not found in build context or excluded by .dockerignore: stat nope.txt: file does not exist"
    )


def test_missing_parent_directories_are_created_0755(ctx: Path, rootfs: Path) -> None:
    os.umask(0o077)
    try:
        copy(ctx, rootfs, "file.txt", dest="/a/b/c/")
    finally:
        os.umask(0o022)
    for rel in ("a", "a/b", "a/b/c"):
        assert stat.S_IMODE((rootfs / rel).stat().st_mode) == 0o755


def test_modes_and_mtimes_are_kept(ctx: Path, rootfs: Path) -> None:
    (ctx / "dir/a.txt").chmod(0o751)
    (ctx / "dir/sub").chmod(0o700)
    os.utime(ctx / "dir/a.txt", ns=(1_000_000_000, 1_234_000_000_007))
    os.utime(ctx / "dir/sub", ns=(1_000_000_000, 5_000_000_000))
    copy(ctx, rootfs, "dir", dest="/app/")
    st = (rootfs / "app/a.txt").stat()
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime_ns == 1_234_000_000_007
    sub = (rootfs / "app/sub").stat()
    assert stat.S_IMODE(sub.st_mode) == 0o700 and sub.st_mtime_ns == 5_000_000_000  # set after its children


def test_chmod_applies_to_copied_files_and_dirs_and_to_created_parents(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "dir", dest="/app/", chmod="640")
    assert stat.S_IMODE((rootfs / "app/a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((rootfs / "app/sub").stat().st_mode) == 0o640
    assert stat.S_IMODE((rootfs / "app").stat().st_mode) == 0o640  # BuildKit v0.32: created dirs take it too
    with pytest.raises(CopyError, match="invalid --chmod=rwx"):
        copy(ctx, rootfs, "file.txt", dest="/x", chmod="rwx")


def test_symlinks_inside_a_directory_stay_symlinks(tmp_path: Path, rootfs: Path) -> None:
    ctx = make_tree(tmp_path / "c", {"d/target.txt": "T", "d/link": "-> target.txt", "d/abs": "-> /etc/passwd",
                                     "d/dangling": "-> nowhere"})
    copy(ctx, rootfs, "d", dest="/s/")
    assert listing(rootfs / "s") == {"target.txt": "f:T", "link": "l:target.txt", "abs": "l:/etc/passwd",
                                     "dangling": "l:nowhere"}


def test_top_level_symlink_source_is_followed(tmp_path: Path, rootfs: Path) -> None:
    ctx = make_tree(tmp_path / "c", {"real.txt": "R", "link.txt": "-> real.txt", "realdir/x": "X", "ld": "-> realdir"})
    copy(ctx, rootfs, "link.txt", dest="/out/")
    assert (rootfs / "out/link.txt").read_text() == "R" and not (rootfs / "out/link.txt").is_symlink()
    copy(ctx, rootfs, "ld", dest="/out2/")
    assert listing(rootfs / "out2") == {"x": "f:X"}


def test_dockerignore_with_globstar_and_exceptions(tmp_path: Path, rootfs: Path) -> None:
    ctx = make_tree(tmp_path / "c", {"src/main.py": "m", "src/cache/x.pyc": "c", "src/y.pyc": "c", "README.md": "r",
                                     "docs/guide.md": "g", "docs/keep.md": "k", ".git/HEAD": "h", "Dockerfile": "FROM"})
    ignore = (".git", "**/*.pyc", "docs", "!docs/keep.md", "Dockerfile")
    copy(ctx, rootfs, ".", dest="/app/", ignore=ignore)
    assert listing(rootfs / "app") == {"README.md": "f:r", "src": "d", "src/main.py": "f:m", "src/cache": "d",
                                       "docs": "d", "docs/keep.md": "f:k"}
    with pytest.raises(CopyError, match=r"excluded by \.dockerignore: stat Dockerfile"):
        copy(ctx, rootfs, "Dockerfile", dest="/x", ignore=ignore)


def test_exclude_flag(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "dir", dest="/e/", exclude=("sub", "*.txt"))
    assert listing(rootfs / "e") == {"empty": "d"}
    copy(ctx, rootfs, "*.txt", dest="/f/", exclude=("other*",))
    assert os.listdir(rootfs / "f") == ["file.txt"]


def test_heredoc_files_are_0644(rootfs: Path) -> None:
    step = CopyStep(sources=(), dest="/h/", heredocs=(("hello.sh", "echo hi\n"), ("b", "x")))
    apply_copy(step, source_root=None, rootfs=rootfs)
    assert (rootfs / "h/hello.sh").read_text() == "echo hi\n"
    assert stat.S_IMODE((rootfs / "h/hello.sh").stat().st_mode) == 0o644
    apply_copy(CopyStep(sources=(), dest="/single", heredocs=(("EOF", "one"),), chmod="755"),
               source_root=None, rootfs=rootfs)
    assert (rootfs / "single").read_text() == "one" and stat.S_IMODE((rootfs / "single").stat().st_mode) == 0o755


def test_directory_cannot_replace_a_file_and_vice_versa(ctx: Path, rootfs: Path) -> None:
    with pytest.raises(CopyError, match="cannot copy to non-directory: /etc/hostname"):
        copy(ctx, rootfs, "dir", dest="/etc/hostname")
    make_tree(rootfs, {"conflict/a.txt/": None})
    with pytest.raises(CopyError, match=r"cannot replace directory /conflict/a\.txt with a file"):
        copy(ctx, rootfs, "dir", dest="/conflict/")


def test_hard_links_inside_one_copy_are_kept(tmp_path: Path, rootfs: Path) -> None:
    ctx = make_tree(tmp_path / "c", {"d/one": "same"})
    os.link(ctx / "d/one", ctx / "d/two")
    copy(ctx, rootfs, "d", dest="/h/")
    assert (rootfs / "h/one").stat().st_ino == (rootfs / "h/two").stat().st_ino


def test_url_source_is_refused_for_copy(ctx: Path, rootfs: Path) -> None:
    with pytest.raises(CopyError, match="source can't be a URL for COPY"):
        copy(ctx, rootfs, "http://127.0.0.1:1/x", dest="/x")


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to set owners")
def test_owners_default_root_chown_and_from_stage(tmp_path: Path, rootfs: Path) -> None:
    ctx = make_tree(tmp_path / "c", {"d/f": "x", "d/sub/g": "y", "d/l": "-> f"})
    for path in ("d/f", "d/sub", "d/sub/g"):
        os.chown(ctx / path, 1234, 5678)
    os.lchown(ctx / "d/l", 1234, 5678)
    copy(ctx, rootfs, "d", dest="/plain/")
    assert {(p.stat(follow_symlinks=False).st_uid, p.stat(follow_symlinks=False).st_gid)
            for p in (rootfs / "plain").rglob("*")} == {(0, 0)}
    step = CopyStep(sources=("d",), dest="/owned/new/", chown="app:staff")
    apply_copy(step, source_root=ctx, rootfs=rootfs, resolve_owner=lambda spec: (1000, 50))
    for p in [rootfs / "owned", rootfs / "owned/new", *(rootfs / "owned/new").rglob("*")]:
        st = p.stat(follow_symlinks=False)
        assert (st.st_uid, st.st_gid) == (1000, 50), p
    copy(ctx, rootfs, "d", dest="/numeric/", chown="7:8")
    assert (rootfs / "numeric/f").stat().st_uid == 7 and (rootfs / "numeric/f").stat().st_gid == 8
    step = CopyStep(sources=("d",), dest="/fromstage/", from_stage=0)
    apply_copy(step, source_root=ctx, rootfs=rootfs)
    st = (rootfs / "fromstage/sub/g").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert (rootfs / "fromstage").stat().st_uid == 0


def test_chown_by_name_without_a_resolver_is_a_clear_error(ctx: Path, rootfs: Path) -> None:
    with pytest.raises(CopyError, match="cannot resolve --chown=app"):
        copy(ctx, rootfs, "file.txt", dest="/x", chown="app")


def test_copy_to_the_root_and_of_the_whole_context(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/")
    copy(ctx, rootfs, ".", dest="/")
    assert (rootfs / "file.txt").read_text() == "F" and (rootfs / "dir/sub/b.txt").read_text() == "B"
    assert (rootfs / "existing/keep").exists()


def test_special_files_fifo_copied_socket_skipped(tmp_path: Path, rootfs: Path) -> None:
    import socket

    ctx = make_tree(tmp_path / "c", {"d/f": "x"})
    os.mkfifo(ctx / "d/pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ctx / "d/sock"))
    try:
        copy(ctx, rootfs, "d", dest="/sp/")
    finally:
        sock.close()
    assert sorted(os.listdir(rootfs / "sp")) == ["f", "pipe"]
    assert stat.S_ISFIFO((rootfs / "sp/pipe").stat().st_mode)

"""``ADD <git repository>`` against a real ``git daemon`` on 127.0.0.1: refs (branch, tag, commit, HEAD),
``:subdir``, ``--keep-git-dir``, the cache key as the resolved commit, and the one-line errors."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_server import commit_files, git, git_daemon

from lamina.build.context import SourceTree
from lamina.build.filecopy import CopyError, Downloads, apply_copy, copy_checksum
from lamina.build.filecopy.git import parse_git_source
from lamina.build.ops import CopyStep

if shutil.which("git") is None:
    pytest.skip("git not installed (scripts/install-system-deps.sh installs it)", allow_module_level=True)


class Repo:
    def __init__(self, url: str, work: Path, first: str, second: str) -> None:
        self.url, self.work, self.first, self.second = url, work, first, second


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    """``app.git``: commit 1 (tagged v1) has README, src/a.txt, run.sh (0755); commit 2 on main changes a.txt."""
    root = tmp_path_factory.mktemp("git")
    served = root / "served"
    served.mkdir()
    git("init", "-q", "--bare", "-b", "main", str(served / "app.git"))
    work = root / "work"
    git("init", "-q", "-b", "main", str(work))
    first = commit_files(work, {"README": "hello\n", "src/a.txt": "one\n", "run.sh": "#!/bin/sh\n"}, "one",
                         executable=("run.sh",))
    git("tag", "-a", "v1", "-m", "v1", cwd=work)
    second = commit_files(work, {"src/a.txt": "two\n"}, "two")
    git("push", "-q", str(served / "app.git"), "main", "v1", cwd=work)
    with git_daemon(served) as url:
        yield Repo(f"{url}/app.git", work, first, second)


def add(rootfs: Path, source: str, dest: str = "/src/", **kw: object) -> None:
    ctx = rootfs.parent / "ctx"
    ctx.mkdir(exist_ok=True)
    step = CopyStep(sources=(source,), dest=dest, is_add=True, **kw)  # type: ignore[arg-type]
    apply_copy(step, source_root=ctx, rootfs=rootfs)


def listing(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): f"{stat.S_IMODE(p.lstat().st_mode):04o}" for p in sorted(root.rglob("*"))}


def test_git_sources_are_recognised_as_buildkit_does() -> None:
    assert parse_git_source("https://github.com/moby/buildkit.git#v0.32.2:frontend") is not None
    parsed = parse_git_source("git@github.com:moby/buildkit.git#main")
    assert parsed is not None and (parsed.remote, parsed.ref, parsed.subdir) == ("git@github.com:moby/buildkit.git",
                                                                                "main", "")
    parsed = parse_git_source("git://h/x.git#ref=v1,subdir=a/../b")
    assert parsed is not None and (parsed.ref, parsed.subdir) == ("v1", "b")
    assert parse_git_source("https://example.com/file.tar.gz") is None  # an http(s) URL needs a .git path
    assert parse_git_source("src/app.git") is None


def test_a_branch_checkout_lands_in_the_destination_without_git_dir(repo: Repo, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    add(rootfs, f"{repo.url}#main")
    assert listing(rootfs / "src") == {"README": "0644", "run.sh": "0755", "src": "0755", "src/a.txt": "0644"}
    assert (rootfs / "src/src/a.txt").read_text() == "two\n"


def test_tag_commit_subdir_and_keep_git_dir(repo: Repo, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    add(rootfs, f"{repo.url}#v1:src", dest="/tagged/")
    add(rootfs, f"{repo.url}#{repo.first}", dest="/pinned/", keep_git_dir=True)
    add(rootfs, repo.url, dest="/head/")
    assert (rootfs / "tagged/a.txt").read_text() == "one\n" and not (rootfs / "tagged/README").exists()
    assert (rootfs / "pinned/src/a.txt").read_text() == "one\n" and (rootfs / "pinned/.git/HEAD").exists()
    assert (rootfs / "head/src/a.txt").read_text() == "two\n"


def test_the_cache_key_is_the_resolved_commit(repo: Repo, tmp_path: Path) -> None:
    served = repo.work.parent / "served" / "app.git"
    git("push", "-q", str(served), f"{repo.second}:refs/heads/moving", cwd=repo.work)
    ctx = SourceTree(tmp_path)
    step = CopyStep(sources=(f"{repo.url}#moving",), dest="/src/", is_add=True)
    pinned = CopyStep(sources=(f"{repo.url}#{repo.second}",), dest="/src/", is_add=True)
    with Downloads() as downloads:
        assert downloads.git.resolve(parse_git_source(f"{repo.url}#v1")) == repo.first  # type: ignore[arg-type]
        before = copy_checksum(step, ctx, downloads=downloads)
        assert before == copy_checksum(step, ctx, downloads=downloads)
    with Downloads() as downloads:  # a fresh build: ls-remote again, same commit, same key
        assert copy_checksum(step, ctx, downloads=downloads) == before
    third = commit_files(repo.work, {"src/a.txt": "three\n"}, "three")
    git("push", "-q", str(served), f"{third}:refs/heads/moving", cwd=repo.work)
    with Downloads() as downloads:  # the branch moved: another key; the commit it was at keeps the old key
        assert copy_checksum(step, ctx, downloads=downloads) != before
        assert copy_checksum(pinned, ctx, downloads=downloads) == before


def test_errors_are_one_line_naming_the_source(repo: Repo, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    for source, words in ((f"{repo.url}#nosuch", "ref 'nosuch' not found"),
                          (f"{repo.url}#main:nodir", "no directory 'nodir'"),
                          ("git://127.0.0.1:1/none.git", "git ls-remote failed")):
        with pytest.raises(CopyError) as info:
            add(rootfs, source)
        assert words in str(info.value) and source in str(info.value) and "\n" not in str(info.value)

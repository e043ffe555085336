"""COPY/ADD flags as BuildKit v0.32.2 applies them (tests/data/parity: chmod-symbolic, copy-chmod-dirs,
copy-parents-exclude), checked on a real context copied into a plain directory standing in for the rootfs:
symbolic ``--chmod`` per source mode, an octal ``--chmod`` on the directories the copy creates,
``--parents`` with its ``/./`` pivot and globs, ``--exclude`` with dockerignore rules."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from lamina.build.filecopy import CopyError, apply_copy
from lamina.build.filecopy.modes import ChmodError, parse_chmod
from lamina.build.ops import CopyStep


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _tree(root: Path) -> dict[str, str]:
    """{relative path: "d0755" | "f0644"} of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = ("d" if path.is_dir() else "f") + f"{_mode(path):04o}"
    return out


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """The parity cases' contexts: files 0644, dirs 0755, the *.sh 0755 (a git checkout with umask 022)."""
    root = tmp_path / "ctx"
    for rel in ("file.txt", "exec.sh", "dir/a.txt", "dir/sub/b.txt", "src/a/x.txt", "src/a/y.log",
                "src/b/z.txt", "src/b/deep/w.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
        (root / rel).chmod(0o755 if rel.endswith(".sh") else 0o644)
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    return root


def copy(ctx: Path, rootfs: Path, *sources: str, dest: str, **kw: Any) -> None:
    apply_copy(CopyStep(sources=sources, dest=dest, **kw), source_root=ctx, rootfs=rootfs)


@pytest.mark.parametrize(("spec", "before", "is_dir", "after"), [
    ("u+x,g-w", 0o644, False, 0o744),
    ("a+r,o-r", 0o644, False, 0o640),
    ("go-w,a+X", 0o644, False, 0o644),   # X: only directories and files already executable
    ("go-w,a+X", 0o755, True, 0o755),
    ("go-w,a+X", 0o744, False, 0o755),
    ("u=rwx,g=rx,o=", 0o755, False, 0o750),
    ("g=u", 0o640, False, 0o660),
    ("+x", 0o600, False, 0o711),         # no class: all of them (BuildKit applies no umask)
    ("u+s,+t", 0o755, False, 0o5755),
    ("640", 0o755, False, 0o640),
    ("4755", 0o600, False, 0o4755),
])
def test_chmod_forms_map_a_source_mode(spec: str, before: int, is_dir: bool, after: int) -> None:
    assert parse_chmod(spec).apply(before, is_dir=is_dir) == after


@pytest.mark.parametrize("bad", ["u+q", "9", "", "u", "+x,", "rwx", "10000"])
def test_invalid_chmod_is_one_line_naming_it(bad: str) -> None:
    with pytest.raises(ChmodError, match=f"invalid --chmod={re.escape(bad)}:") as info:
        parse_chmod(bad)
    assert "\n" not in str(info.value)


def test_symbolic_chmod_applies_to_each_source_mode(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/x", chmod="u+x,g-w")
    copy(ctx, rootfs, "dir/", dest="/z/", chmod="go-w,a+X")
    copy(ctx, rootfs, "exec.sh", dest="/e", chmod="u=rwx,g=rx,o=")
    assert _mode(rootfs / "x") == 0o744 and _mode(rootfs / "e") == 0o750
    assert _tree(rootfs / "z") == {"a.txt": "f0644", "sub": "d0755", "sub/b.txt": "f0644"}
    with pytest.raises(CopyError, match=r"invalid --chmod=u\+q"):
        copy(ctx, rootfs, "file.txt", dest="/bad", chmod="u+q")


def test_directories_the_copy_creates_take_an_octal_chmod(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/newdir/", chmod="640")
    copy(ctx, rootfs, "dir/", dest="/other/deep/", chmod="755")
    copy(ctx, rootfs, "file.txt", dest="/owned/nested/file.txt", chmod="600")
    copy(ctx, rootfs, "file.txt", dest="/tmp/", chmod="640")  # an existing directory keeps its mode
    copy(ctx, rootfs, "file.txt", dest="/plain/new/")
    copy(ctx, rootfs, "file.txt", dest="/sym/new/", chmod="u+x")  # symbolic: created dirs stay 0755
    assert _mode(rootfs / "newdir") == 0o640 and _mode(rootfs / "newdir/file.txt") == 0o640
    assert _mode(rootfs / "other") == _mode(rootfs / "other/deep") == _mode(rootfs / "other/deep/a.txt") == 0o755
    assert _mode(rootfs / "owned") == _mode(rootfs / "owned/nested") == 0o600
    assert _mode(rootfs / "tmp") == 0o1777 and _mode(rootfs / "tmp/file.txt") == 0o640
    assert _mode(rootfs / "plain") == _mode(rootfs / "plain/new") == 0o755
    assert _mode(rootfs / "sym/new") == 0o755 and _mode(rootfs / "sym/new/file.txt") == 0o744


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_created_directories_take_the_chown_owner(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "file.txt", dest="/owned/nested/file.txt", chown="10:20", chmod="600")
    copy(ctx, rootfs, "file.txt", dest="/addown/x/", chown="7:8", is_add=True)
    copy(ctx, rootfs, "file.txt", dest="/single/", chown="1234")  # a lone uid is also the gid
    for rel, owner in (("owned", (10, 20)), ("owned/nested", (10, 20)), ("addown", (7, 8)), ("addown/x", (7, 8)),
                       ("addown/x/file.txt", (7, 8)), ("single", (1234, 1234)), ("single/file.txt", (1234, 1234))):
        st = (rootfs / rel).lstat()
        assert (st.st_uid, st.st_gid) == owner, rel


def test_parents_keep_the_source_path(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "src/a/x.txt", "src/b/deep/w.txt", dest="/dst/", parents=True)
    copy(ctx, rootfs, "src/*/*.txt", dest="/dst2/", parents=True)
    copy(ctx, rootfs, "./src/./b", dest="/dst3/", parents=True)
    assert _tree(rootfs / "dst") == {
        "src": "d0755", "src/a": "d0755", "src/a/x.txt": "f0644", "src/b": "d0755", "src/b/deep": "d0755",
        "src/b/deep/w.txt": "f0644",
    }
    assert _tree(rootfs / "dst2") == {
        "src": "d0755", "src/a": "d0755", "src/a/x.txt": "f0644", "src/b": "d0755", "src/b/z.txt": "f0644",
    }
    assert _tree(rootfs / "dst3") == {"b": "d0755", "b/deep": "d0755", "b/deep/w.txt": "f0644", "b/z.txt": "f0644"}


def test_exclude_follows_dockerignore_rules_relative_to_each_source(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, "src/", dest="/ex/", exclude=("*.log",))  # top level only: a/y.log stays
    copy(ctx, rootfs, "src/", dest="/ex2/", exclude=("*.log", "b/deep"))
    copy(ctx, rootfs, "src/", dest="/ex3/", exclude=("**/*.log",))
    copy(ctx, rootfs, "src", dest="/ex4/", exclude=("a", "**/w.txt"))
    assert "a/y.log" in _tree(rootfs / "ex")
    assert set(_tree(rootfs / "ex2")) == {"a", "a/x.txt", "a/y.log", "b", "b/z.txt"}
    assert "a/y.log" not in _tree(rootfs / "ex3") and "b/deep/w.txt" in _tree(rootfs / "ex3")
    assert _tree(rootfs / "ex4") == {"b": "d0755", "b/deep": "d0755", "b/z.txt": "f0644"}


def test_parents_patterns_cross_directories_and_keep_source_dir_modes(ctx: Path, rootfs: Path) -> None:
    (ctx / "src/b/deep").chmod(0o750)
    copy(ctx, rootfs, "src/**/*.txt", dest="/all/", parents=True)  # patternmatcher's ** spans directories
    copy(ctx, rootfs, "./src/./**/w.txt", dest="/pivot/", parents=True)
    copy(ctx, rootfs, "src/b/deep/w.txt", dest="/modes/", parents=True, chmod="640")
    assert set(_tree(rootfs / "all")) == {"src", "src/a", "src/a/x.txt", "src/b", "src/b/z.txt", "src/b/deep",
                                          "src/b/deep/w.txt"}
    assert _tree(rootfs / "all")["src/b/deep"] == "d0750"  # the directories above a match are the source's
    assert _tree(rootfs / "pivot") == {"b": "d0755", "b/deep": "d0750", "b/deep/w.txt": "f0644"}
    assert _tree(rootfs / "modes") == {"src": "d0640", "src/b": "d0640", "src/b/deep": "d0640",
                                       "src/b/deep/w.txt": "f0640"}


def test_parents_checksum_follows_what_is_copied(ctx: Path) -> None:
    from lamina.build.context import SourceTree
    from lamina.build.filecopy import copy_checksum

    step = CopyStep(sources=("src/**/*.txt",), dest="/all/", parents=True)
    before = copy_checksum(step, SourceTree(ctx))
    (ctx / "src/a/y.log").write_text("not selected")
    assert copy_checksum(step, SourceTree(ctx)) == before
    (ctx / "src/b/deep/w.txt").write_text("changed")
    assert copy_checksum(step, SourceTree(ctx)) != before

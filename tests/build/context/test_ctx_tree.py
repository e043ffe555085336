"""SourceTree: what a COPY sees of the context after .dockerignore, source selection and checksums."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ctx_helpers import make_tree

from lamina.build.context import BuildContext, ContextError, SourceNotFound, SourceTree, split_wildcards


def names(tree: SourceTree, directory: str = "") -> list[str]:
    top = tree.resolve(directory)
    assert top is not None
    return [rel for rel, _ in tree.walk(top)]


def test_dockerignore_excludes_files_and_whole_dirs(tmp_path: Path) -> None:
    make_tree(tmp_path, {"app.py": "x", "node_modules/x/i.js": "z", "docs/a.md": "a", "README.md": "r",
                         "sub/notes.md": "n", ".git/HEAD": "h"})
    tree = SourceTree(tmp_path, ["node_modules", ".git", "*.md", "!README*.md"])
    assert names(tree) == ["README.md", "app.py", "docs", "docs/a.md", "sub", "sub/notes.md"]


def test_excluded_dir_exists_only_through_its_exceptions(tmp_path: Path) -> None:
    make_tree(tmp_path, {"docs/keep.txt": "k", "docs/drop.txt": "d", "docs/deep/x.txt": "x", "other/": None})
    tree = SourceTree(tmp_path, ["docs", "other", "!docs/keep.txt"])
    assert names(tree) == ["docs", "docs/keep.txt"]
    tree = SourceTree(tmp_path, ["**", "!**/x.txt"])
    assert names(tree) == ["docs", "docs/deep", "docs/deep/x.txt"]
    tree = SourceTree(tmp_path, ["docs", "!docs/nothing-here"])
    assert names(tree) == ["other"]


def test_globstar_and_exception_order(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a/b/c/t.go": "", "a/t_test.go": "", "t.go": "", "x.txt": ""})
    tree = SourceTree(tmp_path, ["**", "!**/*.go", "**/*_test.go"])
    assert names(tree) == ["a", "a/b", "a/b/c", "a/b/c/t.go", "t.go"]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a.txt": "", "b.txt": "", ".dockerignore": "a.txt", "build/app.Dockerfile": "FROM x",
                         "build/app.Dockerfile.dockerignore": "b.txt"})
    assert names(SourceTree.load(tmp_path)) == [".dockerignore", "b.txt", "build", "build/app.Dockerfile",
                                                "build/app.Dockerfile.dockerignore"]
    ctx = BuildContext.open(tmp_path, dockerfile_name="app.Dockerfile", dockerfile_dir=tmp_path / "build")
    assert "b.txt" not in names(ctx) and "a.txt" in names(ctx)


def test_split_wildcards() -> None:
    assert split_wildcards("/a/b*/c") == ("/a", "b*/c")
    assert split_wildcards("/*.txt") == ("/", "*.txt")
    assert split_wildcards("/a/b/") == ("/a/b", "")
    assert split_wildcards("/a/b\\*c") == ("/a/b\\*c", "")


def test_select_plain_wildcard_and_missing(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a/b/f.txt": "1", "a/g.txt": "2", "a/h.md": "3", "top.txt": "4", "secret.txt": "s"})
    tree = SourceTree(tmp_path, ["secret.txt"])
    assert [(s.name, s.rel, s.entry.path) for s in tree.select("a/b")] == [("b", "", "a/b")]
    assert [s.entry.path for s in tree.select("a/*.txt")] == ["a/g.txt"]
    assert [s.entry.path for s in tree.select("*/*/*.txt")] == ["a/b/f.txt"]
    assert [s.entry.path for s in tree.select("*")] == ["a", "top.txt"]  # a matched dir is not descended
    assert [s.entry.path for s in tree.select("../../top.txt")] == ["top.txt"]  # cleaned under /
    assert tree.select("*.nothing") == []  # BuildKit: an empty wildcard is allowed
    with pytest.raises(SourceNotFound, match=r"excluded by \.dockerignore: stat secret\.txt"):
        tree.select("secret.txt")
    with pytest.raises(SourceNotFound, match="stat nope/x"):
        tree.select("nope/x")
    with pytest.raises(SourceNotFound):
        tree.select("nope/*.txt")  # the non-wildcard prefix must exist


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make_tree(outside, {"passwd": "host secret"})
    ctx = make_tree(tmp_path / "ctx", {"real/f": "in", "abs": "-> /real", "rel": "-> ../../../real",
                                       "escape": f"-> {outside}/passwd", "loop": "-> loop", "hidden": "-> ign",
                                       "ign/x": "x"})
    tree = SourceTree(ctx, ["ign"])
    for link in ("abs", "rel"):
        entry = tree.resolve(f"{link}/f")
        assert entry is not None and entry.path == "real/f"
    assert tree.resolve("escape") is None  # re-rooted: <ctx>/<outside>/passwd does not exist
    assert tree.resolve("hidden/x") is None  # the target is excluded, so it does not exist
    assert tree.resolve("abs", follow=False).is_symlink  # type: ignore[union-attr]
    with pytest.raises(ContextError, match="too many levels"):
        tree.resolve("loop")


def test_checksum_properties(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"a/one.txt": "1", "a/sub/two.txt": "2", "a/link": "-> one.txt", "other.txt": "o"})
    tree = lambda: SourceTree(ctx)  # noqa: E731 - a fresh listing each time, as a new build would see
    base = tree().checksum(["a/"])
    assert base.startswith("sha256:") and len(base) == 71
    assert tree().checksum(["a"]) == base
    os.utime(ctx / "a/one.txt", ns=(1, 1))  # mtime only
    assert tree().checksum(["a/"]) == base
    (ctx / "other.txt").write_text("changed")  # unrelated file
    (ctx / "new-unrelated").write_text("n")
    assert tree().checksum(["a/"]) == base
    (ctx / "a/one.txt").chmod(0o600)  # mode
    assert tree().checksum(["a/"]) != base
    (ctx / "a/one.txt").chmod(0o644)
    assert tree().checksum(["a/"]) == base
    (ctx / "a/sub/two.txt").write_text("2!")  # content
    changed = tree().checksum(["a/"])
    assert changed != base
    (ctx / "a/sub/two.txt").write_text("2")
    assert tree().checksum(["a/"]) == base
    (ctx / "a/sub/two.txt").rename(ctx / "a/sub/three.txt")  # rename
    assert tree().checksum(["a/"]) != base
    (ctx / "a/sub/three.txt").rename(ctx / "a/sub/two.txt")
    os.unlink(ctx / "a/link")
    os.symlink("sub/two.txt", ctx / "a/link")  # symlink target
    assert tree().checksum(["a/"]) != base


def test_checksum_is_independent_of_location_walk_order_and_the_digest_cache(tmp_path: Path) -> None:
    spec = {f"d/{name}": name * 3 for name in ("b", "a", "c", "zz", "é")}
    one = SourceTree(make_tree(tmp_path / "one", spec)).checksum(["d"])
    two = SourceTree(make_tree(tmp_path / "two", dict(reversed(spec.items())))).checksum(["d"])
    assert one == two
    # the same bytes under a different inode/mtime give the same answer (the cache is only a shortcut)
    (tmp_path / "two/d/a").unlink()
    (tmp_path / "two/d/a").write_text("aaa")
    assert SourceTree(tmp_path / "two").checksum(["d"]) == one


def test_checksum_follows_dockerignore_and_exclude(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"src/a.py": "a", "src/a.pyc": "c", "src/skip/x": "x"})
    full = SourceTree(ctx).checksum(["src"])
    ignored = SourceTree(ctx, ["**/*.pyc"])
    assert ignored.checksum(["src"]) != full
    (ctx / "src/a.pyc").write_text("other bytecode")
    assert SourceTree(ctx, ["**/*.pyc"]).checksum(["src"]) == ignored.checksum(["src"])
    excluded = SourceTree(ctx).checksum(["src"], exclude=["skip", "*.pyc"])
    (ctx / "src/skip/x").write_text("changed")
    assert SourceTree(ctx).checksum(["src"], exclude=["skip", "*.pyc"]) == excluded


def test_checksum_of_missing_source_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound) as info:
        SourceTree(make_tree(tmp_path, {"x": ""})).checksum(["missing.txt"])
    expected = "file not found in build context or excluded by .dockerignore: stat missing.txt: file does not exist"
    assert str(info.value) == expected


def test_wildcard_selection_changes_the_checksum(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"a.txt": "1", "b.txt": "2", "c.md": "3"})
    before = SourceTree(ctx).checksum(["*.txt"])
    (ctx / "c.md").write_text("changed")
    assert SourceTree(ctx).checksum(["*.txt"]) == before
    (ctx / "d.txt").write_text("new match")
    assert SourceTree(ctx).checksum(["*.txt"]) != before

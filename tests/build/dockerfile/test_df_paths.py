"""WORKDIR and COPY destination rules (BuildKit's NormalizePath on Linux)."""

import pytest

from lamina.build.dockerfile.paths import normalize_dest, normalize_workdir


@pytest.mark.parametrize(
    ("workdir", "dest", "expected"),
    [
        ("/app", ".", "/app/"),
        ("/app", "", "/app/"),
        ("/app", "./", "/app/"),
        ("/app", "x", "/app/x"),
        ("/app", "x/", "/app/x/"),
        ("/app", "a/../b", "/app/b"),
        ("/app", "sub/.", "/app/sub/."),
        ("/", ".", "/"),
        ("", "rel", "/rel"),
        ("/app", "/abs/", "/abs/"),
        ("/app", "/abs/./x", "/abs/./x"),  # an absolute destination is used as written
    ],
)
def test_dest(workdir: str, dest: str, expected: str) -> None:
    assert normalize_dest(workdir, dest) == expected


@pytest.mark.parametrize(
    ("current", "requested", "expected"),
    [
        ("", "/a", "/a"),
        ("/a", "b", "/a/b"),
        ("/a/b", "../c", "/a/c"),
        ("/", "x/y/", "/x/y"),
        ("/a", "/b/", "/b/"),
        ("", "rel", "/rel"),
    ],
)
def test_workdir(current: str, requested: str, expected: str) -> None:
    assert normalize_workdir(current, requested) == expected

"""The one confined path walk (lamina.build.confined) that COPY's destination, USER/WORKDIR lookups in a
root filesystem and the build context's snapshot all resolve paths with."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lamina.build.confined import MAX_SYMLINKS, Missing, SymlinkLoop, resolve_confined

# A small tree: path -> symlink target, or None for a directory/file.
TREE: dict[str, str | None] = {
    "etc": None,
    "etc/passwd": None,
    "etc/alt": "/etc",  # absolute: restarts at the root
    "etc/up": "../..",  # climbs past the top: stays at the top
    "usr": None,
    "usr/lib": None,
    "lib": "usr/lib",  # relative, from the root
    "loop": "loop",
}


def readlink(parts: Sequence[str]) -> str | None:
    key = "/".join(parts)
    if key not in TREE:
        raise Missing
    return TREE[key]


@pytest.mark.parametrize(
    ("path", "expected", "found"),
    [
        ("/etc/passwd", ["etc", "passwd"], True),
        ("etc/alt/passwd", ["etc", "passwd"], True),
        ("/etc/up/etc/passwd", ["etc", "passwd"], True),
        ("/../../etc/./passwd", ["etc", "passwd"], True),
        ("/lib", ["usr", "lib"], True),
        ("/lib/x/../y/./z", ["usr", "lib", "y", "z"], False),  # the missing tail is cleaned lexically
        ("/nope/..", [], False),
        ("/", [], True),
    ],
)
def test_resolution_stays_inside_the_root(path: str, expected: list[str], found: bool) -> None:
    assert resolve_confined(path, readlink) == (expected, found)


def test_last_component_is_followed_only_when_asked() -> None:
    assert resolve_confined("/lib", readlink, follow_last=False) == (["lib"], True)
    assert resolve_confined("/etc/alt/passwd", readlink, follow_last=False) == (["etc", "passwd"], True)


def test_a_symlink_loop_is_an_error_naming_the_path() -> None:
    with pytest.raises(SymlinkLoop, match="too many levels of symbolic links resolving /loop/x"):
        resolve_confined("/loop/x", readlink)
    assert MAX_SYMLINKS == 255  # BuildKit's limit

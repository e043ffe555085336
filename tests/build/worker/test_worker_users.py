"""resolve_user: Docker's USER / --chown semantics against the image's passwd and group files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.worker import ResolvedUser, UnknownUser, resolve_in_root, resolve_user
from lamina.build.worker.users import resolve_chown

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
app:x:1000:1000:app:/home/app:/bin/sh
svc:x:1001:1001::/srv:/bin/false
"""
GROUP = """root:x:0:
app:x:1000:
svc:x:1001:
wheel:x:10:app,svc
docker:x:999:app
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ResolvedUser(0, 0, (0,), "root", "/root")),
        ("root", ResolvedUser(0, 0, (0,), "root", "/root")),
        ("app", ResolvedUser(1000, 1000, (1000, 10, 999), "app", "/home/app")),
        ("1000", ResolvedUser(1000, 1000, (1000, 10, 999), "app", "/home/app")),
        ("svc", ResolvedUser(1001, 1001, (1001, 10), "svc", "/srv")),
        ("app:wheel", ResolvedUser(1000, 10, (10,), "app", "/home/app")),
        ("app:999", ResolvedUser(1000, 999, (999,), "app", "/home/app")),
        ("app:4242", ResolvedUser(1000, 4242, (4242,), "app", "/home/app")),
        ("4242", ResolvedUser(4242, 0, (0,), "", "/")),
        ("4242:4343", ResolvedUser(4242, 4343, (4343,), "", "/")),
    ],
)
def test_resolution(root: Path, spec: str, expected: ResolvedUser) -> None:
    assert resolve_user(root, spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app", (1000, 1000)),  # a name: its passwd uid and gid
        ("1234", (1234, 1234)),  # a bare number is the uid and the gid (BuildKit's --chown=1234)
        ("1000", (1000, 1000)),
        ("svc", (1001, 1001)),
        ("app:wheel", (1000, 10)),
        ("app:4242", (1000, 4242)),
        ("7:docker", (7, 999)),
        ("", (0, 0)),
    ],
)
def test_chown_resolution(root: Path, spec: str, expected: tuple[int, int]) -> None:
    assert resolve_chown(root, spec) == expected


def test_chown_names_the_image_lacks_resolve_as_buildkit_does(root: Path, tmp_path: Path) -> None:
    assert resolve_chown(root, "ghost") == (0, 0)  # BuildKit's readUser: no passwd entry, ids stay 0
    assert resolve_chown(root, "app:ghosts") == (1000, 1000)  # no group entry: the user's gid stays
    assert resolve_chown(root, "ghost:wheel") == (0, 10)
    assert resolve_chown(tmp_path / "no-etc", "app:wheel") == (0, 0)
    assert resolve_chown(root, "99999999999") == (0, 0)  # not a uint32: read as a name, as ParseUint fails


def test_unknown_names_are_clear_errors(root: Path) -> None:
    with pytest.raises(UnknownUser, match="unable to find user ghost: no matching entries in passwd file"):
        resolve_user(root, "ghost")
    with pytest.raises(UnknownUser, match="unable to find group ghosts: no matching entries in group file"):
        resolve_user(root, "app:ghosts")


def test_missing_files_allow_numeric_ids_only(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "123:456") == ResolvedUser(123, 456, (456,))
    # HOME defaults as Docker's: /root for uid 0, / for any other uid without a passwd entry
    assert resolve_user(tmp_path, "") == ResolvedUser(0, 0, (0,), "root", "/root")
    assert resolve_user(tmp_path, "0") == ResolvedUser(0, 0, (0,), "", "/root")
    assert resolve_user(tmp_path, "123").home == "/"
    with pytest.raises(UnknownUser):
        resolve_user(tmp_path, "app")


def test_passwd_symlink_cannot_escape_the_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (tmp_path / "outside").write_text("eve:x:7:7::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").symlink_to("../../outside")  # on the host this would reach tmp/outside
    (rootfs / "etc" / "group").symlink_to(tmp_path / "outside")  # absolute: the image's own path
    assert resolve_in_root(rootfs, "/etc/passwd") == rootfs / "outside"
    assert resolve_in_root(rootfs, "/etc/group") == rootfs / str(tmp_path / "outside").lstrip("/")
    with pytest.raises(UnknownUser, match="unable to find user eve"):
        resolve_user(rootfs, "eve")
    (rootfs / "outside").write_text("eve:x:8:8::/:/bin/sh\n")  # the image's own file is what counts
    assert resolve_user(rootfs, "eve") == ResolvedUser(8, 8, (8,), "eve", "/")


def test_resolve_in_root_follows_chains_and_stops_loops(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "abs").symlink_to("/lib/../lib")
    assert resolve_in_root(tmp_path, "/abs/x") == tmp_path / "usr" / "lib" / "x"
    assert resolve_in_root(tmp_path, "../../lib") == tmp_path / "usr" / "lib"
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="too many levels"):
        resolve_in_root(tmp_path, "/loop")

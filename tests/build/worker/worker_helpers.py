"""Helpers shared by the worker tests (imported by name: pytest puts this dir on sys.path)."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

EXTRA_APPLETS = ("ln", "mv", "stat", "mknod", "mkfifo", "readlink", "hostname", "find", "cp")

_NOT_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, mknod, runc); CI runs as root")
ROOT_ONLY = [pytest.mark.root, _NOT_ROOT]  # as a module's pytestmark


def needs_root(test: T) -> T:
    """Mark a test ``root`` and skip it when not running as root."""
    return pytest.mark.root(_NOT_ROOT(test))


def tar_members(path: Path | str) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def tar_names(path: Path | str) -> list[str]:
    return [m.name for m in tar_members(path)]


def tree(root: Path) -> dict[str, tuple]:
    """Everything that a layer round trip must keep, per relative path."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                extra: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                extra = Path(path).read_bytes()
            elif stat.S_ISCHR(st.st_mode):
                extra = st.st_rdev
            else:
                extra = None
            xattrs = tuple(
                sorted(
                    (n, os.getxattr(path, n, follow_symlinks=False)) for n in os.listxattr(path, follow_symlinks=False)
                )
            )
            mtime = int(st.st_mtime)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, extra, xattrs)
    return out

"""The merged view of a layer stack, read without mounting it: what a step's diff is taken against.

A stack is a list of unpacked layer dirs in overlay format, top first (deletions are 0/0 character
devices, a replaced directory carries ``trusted.overlay.opaque=y``), as overlayfs stacks its lower dirs.
:class:`LowerView` answers the two questions BuildKit's overlay differ (``util/overlay.Changes``) asks
of its base while it walks an upper dir: what is at this path (``lookup``), and what does this
directory hold (``children``). Each directory's contributing layer dirs are resolved once and cached,
so a lookup costs one ``lstat`` per layer that holds the parent directory.

:func:`same_entry` is that differ's ``sameDirent``: the test that leaves an upper entry out of the
layer because overlayfs only copied it up (a hardlink made to a lower file, a ``chmod`` to the mode it
already had, ``mv a b && mv b a``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

__all__ = ["LowerView", "is_opaque", "is_whiteout", "same_entry"]

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_CAPABILITY_XATTR = "security.capability"
_CHUNK = 1 << 16


def is_whiteout(st: os.stat_result) -> bool:
    """Overlayfs marks a deleted entry with a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    """A directory whose lower layers' contents are hidden (it replaced what was there)."""
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class LowerView:
    """Read-only merged view of ``lowers`` (overlay-format dirs, top first); paths are relative, ``""`` is /."""

    def __init__(self, lowers: Sequence[str | os.PathLike[str]]) -> None:
        self._dirs: dict[str, list[str]] = {"": [os.fspath(layer) for layer in lowers]}

    def _layers_of(self, rel: str) -> list[str]:
        """The real directories that make up merged directory ``rel``, top first ([] if not a directory)."""
        known = self._dirs.get(rel)
        if known is not None:
            return known
        parent, _, name = rel.rpartition("/")
        found: list[str] = []
        for directory in self._layers_of(parent):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-directory hides everything below it
            found.append(path)
            if is_opaque(path):
                break
        self._dirs[rel] = found
        return found

    def lookup(self, rel: str) -> tuple[str, os.stat_result] | None:
        """The real path and lstat of what the merged view holds at ``rel``, or None."""
        parent, _, name = rel.rpartition("/")
        for directory in self._layers_of(parent):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            return None if is_whiteout(st) else (path, st)
        return None

    def children(self, rel: str) -> set[str]:
        """The names merged directory ``rel`` holds (empty when ``rel`` is not a directory)."""
        names: set[str] = set()
        hidden: set[str] = set()
        for directory in self._layers_of(rel):
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name in names or entry.name in hidden:
                        continue
                    if is_whiteout(entry.stat(follow_symlinks=False)):
                        hidden.add(entry.name)
                    else:
                        names.add(entry.name)
        return names


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAPABILITY_XATTR, follow_symlinks=False)
    except OSError:
        return None


def _same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk_a, chunk_b = fa.read(_CHUNK), fb.read(_CHUNK)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def same_entry(base: str, base_st: os.stat_result, upper: str, upper_st: os.stat_result) -> bool:
    """BuildKit's ``sameDirent``: type and mode, owner, device number and file capabilities equal; for
    non-directories also size and mtime, and — when both mtimes have whole seconds only (a file unpacked
    from a tar, then copied up) — the symlink target or the content."""
    if (base_st.st_mode, base_st.st_uid, base_st.st_gid, base_st.st_rdev) != (
        upper_st.st_mode,
        upper_st.st_uid,
        upper_st.st_gid,
        upper_st.st_rdev,
    ):
        return False
    if _capability(base) != _capability(upper):
        return False
    if stat.S_ISDIR(base_st.st_mode):
        return True
    if base_st.st_size != upper_st.st_size:
        return False
    base_s, base_ns = divmod(base_st.st_mtime_ns, 1_000_000_000)
    upper_s, upper_ns = divmod(upper_st.st_mtime_ns, 1_000_000_000)
    if base_s != upper_s:
        return False
    if base_ns == 0 and upper_ns == 0:
        if stat.S_ISLNK(base_st.st_mode):
            return os.readlink(base) == os.readlink(upper)
        if base_st.st_size == 0 or not stat.S_ISREG(base_st.st_mode):
            return True
        return _same_content(base, upper)
    return base_ns == upper_ns

"""Writing into a root filesystem without ever leaving it.

Destination paths are resolved as containerd's ``fs.RootPath`` does (symlinks followed, absolute targets
and ``..`` re-rooted at the rootfs, a missing tail kept as written), so an image whose ``/app`` is a
symlink to ``/`` or ``../../..`` still lands inside the rootfs. Every write then goes through directory
descriptors opened component by component with ``O_NOFOLLOW``: if a symlink appears under us between
resolving and writing, the write fails instead of following it to the host.

Ownership is applied only when running as root (a build needs root for runc and overlay mounts anyway;
unprivileged runs, such as unit tests, keep the caller's owner).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from lamina.build.confined import Missing, SymlinkLoop, resolve_confined
from lamina.build.context import ContextError

__all__ = ["CopyError", "RootFS", "write_all"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CopyError(ContextError):
    """A COPY/ADD cannot be performed; the message names the offending path."""


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class RootFS:
    """A directory treated as ``/``: confined resolution and O_NOFOLLOW writes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.privileged = os.geteuid() == 0

    def display(self, rel: str) -> str:
        return "/" + rel

    def resolve(self, path: str) -> str:
        """The root-relative path ``path`` designates, every existing symlink followed inside the root."""
        try:
            return "/".join(resolve_confined(path, self._readlink)[0])
        except SymlinkLoop as exc:
            raise CopyError(str(exc)) from None

    def _readlink(self, parts: Sequence[str]) -> str | None:
        full = os.path.join(self.root, *parts)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            raise Missing from None
        return os.readlink(full) if stat.S_ISLNK(st.st_mode) else None

    def lstat(self, rel: str) -> os.stat_result | None:
        """lstat of a resolved path, or None if it does not exist."""
        try:
            return os.lstat(os.path.join(self.root, rel) if rel else self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_dir(self, rel: str) -> int:
        """An fd of the resolved directory ``rel``, each component opened with O_NOFOLLOW."""
        fd = os.open(self.root, DIR_FLAGS)
        done: list[str] = []
        try:
            for part in rel.split("/") if rel else ():
                try:
                    nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise CopyError(
                        f"cannot open {self.display('/'.join([*done, part]))}: {exc.strerror}"
                    ) from None
                os.close(fd)
                fd = nfd
                done.append(part)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def dir(self, rel: str) -> Iterator[int]:
        fd = self.open_dir(rel)
        try:
            yield fd
        finally:
            os.close(fd)

    def chown(self, dir_fd: int, name: str, uid: int, gid: int) -> None:
        if self.privileged:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        if self.privileged:
            os.fchown(fd, uid, gid)

    def mkdir_all(self, rel: str, *, owner: tuple[int, int] | None, mode: int = 0o755) -> list[str]:
        """``mkdir -p`` of a resolved path; created dirs get ``mode`` and ``owner`` (None: the caller's).

        Returns the root-relative paths of the directories it created, parents first."""
        fd = os.open(self.root, DIR_FLAGS)
        done: list[str] = []
        made: list[str] = []
        try:
            for part in rel.split("/") if rel else ():
                done.append(part)
                where = self.display("/".join(done))
                created = False
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise CopyError(f"cannot create directory {where}: {exc.strerror}") from None
                try:
                    nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    what = "it exists and is not a directory" if exc.errno in (errno.ENOTDIR, errno.ELOOP) else (
                        exc.strerror
                    )
                    raise CopyError(f"cannot create directory {where}: {what}") from None
                os.close(fd)
                fd = nfd
                if created:
                    made.append("/".join(done))
                    if owner is not None:
                        self.fchown(fd, *owner)
                    os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return made

    def chmod_dir(self, rel: str, mode: int) -> None:
        """Set the mode of the resolved directory ``rel`` (opened with O_NOFOLLOW components)."""
        with self.dir(rel) as fd:
            os.fchmod(fd, mode)

    def clear_for(self, dir_fd: int, name: str, *, is_dir: bool, where: str) -> os.stat_result | None:
        """Make room for a new entry ``name``: a non-directory is removed; a directory stays for a
        directory and is an error for anything else (fsutil: "cannot replace to directory"). Returns the
        lstat of what is left (an existing directory) or None."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return st
            raise CopyError(f"cannot replace directory {where} with a file")
        if is_dir:
            raise CopyError(f"cannot copy a directory to non-directory {where}")
        os.unlink(name, dir_fd=dir_fd)
        return None

    def remove_tree(self, dir_fd: int, name: str) -> None:
        """Remove ``name`` (recursively if a directory) without following symlinks."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

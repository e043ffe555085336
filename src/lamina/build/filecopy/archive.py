"""ADD's local archives: detect a tar by content (gzip, bzip2, xz, zstd or plain) and unpack it safely.

Detection follows BuildKit's ``isArchivePath``: a regular file is an archive if, once decompressed by
its magic bytes, a first tar header can be read; anything else is copied as a file. Unpacking follows
Docker's ``archive.Untar`` as BuildKit runs it (in a chroot at the destination): names are cleaned and an
entry whose name climbs out (``../x``) is refused, as are symlinks whose relative target climbs out of
the destination and hard links to outside it; owners, modes and mtimes come from the archive; a later
entry replaces an earlier one (a directory survives only another directory); directory times are set
last. The destination is a :class:`RootFS` rooted at the extraction directory, so even a symlink the
archive itself planted resolves inside it. We refuse device nodes (Docker would ``mknod`` them); the
worker's layer unpacker (``lamina.build.worker.extract``) is not reused because layers have whiteout
semantics and an empty-directory target, while ADD merges into an existing tree.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

from lamina.build import gopath
from lamina.build.filecopy.rootfs import NEW_FILE_FLAGS, CopyError, RootFS, write_all

__all__ = ["compression_of", "extract_archive", "is_archive"]

_CHUNK = 1 << 20
_MAGIC = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError, ValueError)


def compression_of(head: bytes) -> str:
    """The compression named by a file's first bytes: gzip, bzip2, xz, zstd, or "" (none)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return ""


@contextlib.contextmanager
def _decompressed(raw: BinaryIO) -> Iterator[BinaryIO]:
    head = raw.read(8)
    raw.seek(0)
    kind = compression_of(head)
    stream: BinaryIO
    if kind == "gzip":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif kind == "bzip2":
        stream = bz2.BZ2File(raw, "rb")
    elif kind == "xz":
        stream = lzma.LZMAFile(raw, "rb")  # noqa: SIM115 (closed below)
    elif kind == "zstd":
        stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)  # type: ignore[assignment]
    else:
        stream = raw
    try:
        yield stream
    finally:
        if stream is not raw:
            stream.close()


def is_archive(raw: BinaryIO) -> bool:
    """True if ``raw`` (seekable, at 0) holds a tar archive, possibly compressed. Leaves it at 0."""
    try:
        with _decompressed(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            return tar.next() is not None
    except _READ_ERRORS:
        return False
    finally:
        raw.seek(0)


def _escapes(rel: str) -> bool:
    return rel == ".." or rel.startswith("../")


class _Extractor:
    def __init__(self, dest: RootFS, what: str) -> None:
        self.dest = dest
        self.what = what
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def _fail(self, name: str, why: str) -> CopyError:
        return CopyError(f"cannot extract {self.what}: entry {name!r} {why}")

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = member.name
        cleaned = gopath.clean(name)
        if _escapes(cleaned):
            raise self._fail(name, "points outside the destination")
        rel = cleaned.lstrip("/")
        if rel in ("", "."):
            return
        parent, _, base = rel.rpartition("/")
        parent_rel = self.dest.resolve(parent)
        self.dest.mkdir_all(parent_rel, owner=None)
        with self.dest.dir(parent_rel) as pfd:
            if member.isdir():
                try:
                    st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    os.unlink(base, dir_fd=pfd)
                    st = None
                if st is None:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                self.dirs.append((f"{parent_rel}/{base}" if parent_rel else base, member))
                return
            self.dest.remove_tree(pfd, base)
            if member.isreg():
                self._file(pfd, base, member, tar)
            elif member.issym():
                target = member.linkname
                if not target.startswith("/") and _escapes(gopath.clean(f"{parent}/{target}" if parent else target)):
                    raise self._fail(name, f"is a symlink to {target!r}, outside the destination")
                os.symlink(target, base, dir_fd=pfd)
                self._meta_link(pfd, base, member)
            elif member.islnk():
                self._hardlink(pfd, base, member)
            elif member.isfifo():
                os.mkfifo(base, 0o600, dir_fd=pfd)
                self._meta_path(pfd, base, member)
            elif member.ischr() or member.isblk():
                raise self._fail(name, "is a device node; device files are not allowed in ADD archives")
            else:
                raise self._fail(name, f"has an unsupported tar type {member.type!r}")

    def _file(self, pfd: int, base: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        fd = os.open(base, NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(member)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    write_all(fd, chunk)
            self._meta_fd(fd, member)
        finally:
            os.close(fd)

    def _hardlink(self, pfd: int, base: str, member: tarfile.TarInfo) -> None:
        target = gopath.clean(member.linkname).lstrip("/")
        if _escapes(gopath.clean(member.linkname)) or target in ("", "."):
            raise self._fail(member.name, f"is a hard link to {member.linkname!r}, outside the destination")
        tparent, _, tbase = target.rpartition("/")
        tparent_rel = self.dest.resolve(tparent)
        missing = self._fail(member.name, f"is a hard link to {member.linkname!r}, which does not exist")
        try:
            tfd = self.dest.open_dir(tparent_rel)
        except CopyError:
            raise missing from None
        try:
            try:
                st = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise missing from None
            if stat.S_ISDIR(st.st_mode):
                raise self._fail(member.name, f"is a hard link to directory {member.linkname!r}")
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _meta_link(self, pfd: int, base: str, member: tarfile.TarInfo) -> None:
        self.dest.chown(pfd, base, member.uid, member.gid)
        ns = int(member.mtime * 1_000_000_000)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def _meta_path(self, pfd: int, base: str, member: tarfile.TarInfo) -> None:
        self.dest.chown(pfd, base, member.uid, member.gid)
        os.chmod(base, member.mode & 0o7777, dir_fd=pfd)
        ns = int(member.mtime * 1_000_000_000)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def _meta_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        self.dest.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        ns = int(member.mtime * 1_000_000_000)
        os.utime(fd, ns=(ns, ns))

    def finish(self) -> None:
        """Directory owners, modes and times last, deepest first, so children do not disturb them."""
        for rel, member in reversed(self.dirs):
            with self.dest.dir(rel) as fd:
                self._meta_fd(fd, member)


def extract_archive(raw: BinaryIO, dest: RootFS, *, what: str) -> None:
    """Unpack the (possibly compressed) tar in ``raw`` into ``dest``'s root; ``what`` names it in errors."""
    extractor = _Extractor(dest, what)
    try:
        with _decompressed(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                extractor.add(member, tar)
    except CopyError:
        raise
    except _READ_ERRORS as exc:
        raise CopyError(f"cannot extract {what}: {exc}") from None
    extractor.finish()

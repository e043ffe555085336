"""Unpack an OCI layer into a directory in overlayfs format, safely, verifying its diffID.

OCI whiteouts (image-spec layer.md) become what overlayfs reads as deletions: ``.wh.<name>`` -> a 0/0
character device, ``.wh..wh..opq`` -> the ``trusted.overlay.opaque=y`` xattr on the parent. The result
is used directly as an overlay lower dir, so a layer is unpacked once and never "applied" onto others.

A root entry (``/``, ``./``, ``.``) is accepted and its metadata ignored, as containerd does.
Nothing outside the destination is ever written: entries with ``..`` or absolute names, entries whose
parent goes through a symlink (the classic "symlink, then a file through it" escape), hard links to
anything but an earlier entry of the same layer, overlay xattrs and device nodes other than whiteouts
are refused with an error naming the entry. We are stricter than Docker about symlinked parents on
purpose: a tar written by walking a filesystem (every real builder) never contains such a path.

The layer is unpacked into a temp dir beside the destination and renamed into place only when the
whole stream was read and its sha256 matched ``expected_diff_id``; on any failure the temp dir is
removed. :func:`extract_layer_async` unpacks while the compressed bytes are still arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard
from isal import igzip_lib

from lamina.oci import Digest, parse_digest

from .compression import open_layer
from .pipeline import Producer, Stage
from .tarread import TarFormatError, TarReader
from .tarwrite import OPAQUE_MARKER, WHITEOUT_PREFIX

__all__ = ["LayerError", "extract_layer", "extract_layer_async"]

_CHUNK = 1 << 20
_REFUSED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


class LayerError(ValueError):
    """The layer is malformed, unsafe or does not match its diffID."""


def _clean_name(name: str, what: str = "path") -> str:
    """Validate a tar name and return it relative, without './' or trailing slashes.

    The layer root itself (``/``, ``./``, ``.``, ``.//``, ``/.``...) comes back as ``""``; any other
    absolute name, and any name with a ``..`` component, is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"unsafe layer entry {name!r}: {what} contains '..'")
    if name.startswith("/") and parts:
        raise LayerError(f"unsafe layer entry {name!r}: absolute {what}")
    if any("\0" in p for p in parts):
        raise LayerError(f"unsafe layer entry {name!r}: NUL in {what}")
    return "/".join(parts)


class _Unpacker:
    def __init__(self, root: str) -> None:
        self.root = root
        self._dirs_ok: set[str] = {""}
        # Everything this unpack created: the destination starts empty, so nothing else can exist,
        # which saves an lstat per entry on the common path.
        self._seen: set[str] = set()
        self._dir_meta: dict[str, tarfile.TarInfo] = {}  # applied last; dropped if the dir is replaced

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _parent(self, rel: str, entry: str) -> None:
        """Make sure every ancestor of ``rel`` is a real directory of this layer (creating missing ones)."""
        parent = rel.rpartition("/")[0]
        if parent in self._dirs_ok:
            return
        prefix = ""
        for part in parent.split("/"):
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix in self._dirs_ok:
                continue
            path = self._abs(prefix)
            try:
                if prefix not in self._seen:
                    raise FileNotFoundError(path)
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                self._seen.add(prefix)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise LayerError(f"unsafe layer entry {entry!r}: its parent {prefix!r} is a symlink")
                if not stat.S_ISDIR(st.st_mode):
                    raise LayerError(f"invalid layer entry {entry!r}: its parent {prefix!r} is not a directory")
            self._dirs_ok.add(prefix)

    def _clear(self, rel: str, keep_dir: bool) -> None:
        """Remove what a later entry replaces (tar semantics: the last entry for a name wins)."""
        if rel not in self._seen:
            return
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(path)
            self._dirs_ok = {d for d in self._dirs_ok if d != rel and not d.startswith(rel + "/")}
            self._dir_meta = {d: i for d, i in self._dir_meta.items() if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)

    def add(self, info: tarfile.TarInfo, tar: TarReader) -> None:
        entry = info.name
        rel = _clean_name(entry)
        if not rel:
            # The layer root itself, which umoci, Go's archive/tar users and `tar -C dir .` write. As
            # containerd's applier does ("file ignored: resolved to root"), its owner, mode, times and
            # xattrs are not applied: the root of the image is the snapshot's, not any one layer's.
            if not info.isdir():
                raise LayerError(f"invalid layer entry {entry!r}: the layer root can only be a directory")
            return
        self._parent(rel, entry)
        base = rel.rpartition("/")[2]
        if base == OPAQUE_MARKER:
            parent = rel.rpartition("/")[0]
            os.setxattr(self._abs(parent), "trusted.overlay.opaque", b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = rel[: len(rel) - len(base)] + base[len(WHITEOUT_PREFIX) :]
            if base[len(WHITEOUT_PREFIX) :] in ("", ".", ".."):
                raise LayerError(f"invalid layer entry {entry!r}: whiteout without a name")
            if target not in self._seen or not os.path.lexists(self._abs(target)):
                os.mknod(self._abs(target), stat.S_IFCHR | 0o000, os.makedev(0, 0))  # never hides its own layer
                self._seen.add(target)
            return
        path = self._abs(rel)
        if info.isdir():
            if rel in self._seen:
                self._clear(rel, keep_dir=True)
            if rel not in self._seen or not os.path.isdir(path):
                os.mkdir(path, 0o700)
            self._seen.add(rel)
            self._dirs_ok.add(rel)
            self._dir_meta.pop(rel, None)  # keep the order of the last entry for this dir
            self._dir_meta[rel] = info
            return
        self._clear(rel, keep_dir=False)
        self._seen.add(rel)
        if info.isreg():
            self._regular(path, info, tar)
        elif info.issym():
            if not info.linkname:
                raise LayerError(f"invalid layer entry {entry!r}: symlink with an empty target")
            os.symlink(info.linkname, path)
            self._meta(path, info, symlink=True)
        elif info.islnk():
            self._hardlink(path, rel, info)
        elif info.ischr() and info.devmajor == 0 and info.devminor == 0:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))  # an overlay-style whiteout, as some tools write
        elif info.isfifo():
            os.mkfifo(path, 0o600)
            self._meta(path, info)
        elif info.ischr() or info.isblk():
            raise LayerError(f"unsafe layer entry {entry!r}: device files are not allowed in layers")
        else:
            raise LayerError(f"unsupported layer entry {entry!r}: tar type {info.type!r}")

    def _regular(self, path: str, info: tarfile.TarInfo, tar: TarReader) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if info.size:
                tar.copy_data(fd, info)
            os.fchown(fd, info.uid, info.gid)
            os.fchmod(fd, info.mode & 0o7777)
            _set_xattrs(path, info)
            os.utime(fd, ns=(_ns(info.mtime), _ns(info.mtime)))
        finally:
            os.close(fd)

    def _hardlink(self, path: str, rel: str, info: tarfile.TarInfo) -> None:
        entry = info.name
        try:
            target = _clean_name(info.linkname, "hard link target")
        except LayerError:
            raise LayerError(f"unsafe layer entry {entry!r}: hard link to {info.linkname!r} leaves the layer") from None
        if not target:
            raise LayerError(f"unsafe layer entry {entry!r}: hard link to the layer root")
        try:
            self._parent(target, entry)
            st = os.lstat(self._abs(target))
        except (FileNotFoundError, LayerError):
            raise LayerError(
                f"unsafe layer entry {entry!r}: hard link target {info.linkname!r} is not a file of this layer"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"invalid layer entry {entry!r}: hard link to directory {info.linkname!r}")
        os.link(self._abs(target), path, follow_symlinks=False)

    def _meta(self, path: str, info: tarfile.TarInfo, *, symlink: bool = False) -> None:
        os.lchown(path, info.uid, info.gid)
        if not symlink:
            os.chmod(path, info.mode & 0o7777)
        _set_xattrs(path, info)
        os.utime(path, ns=(_ns(info.mtime), _ns(info.mtime)), follow_symlinks=False)

    def finish(self) -> None:
        """Directory metadata last, deepest first, so creating children does not disturb mtimes."""
        for rel, info in sorted(self._dir_meta.items(), key=lambda item: -item[0].count("/")):
            path = self._abs(rel)
            if stat.S_ISDIR(os.lstat(path).st_mode):  # never chmod through a symlink that replaced it
                self._meta(path, info)


def _ns(mtime: float) -> int:
    return int(mtime * 1_000_000_000) if isinstance(mtime, float) else int(mtime) * 1_000_000_000


def _set_xattrs(path: str, info: tarfile.TarInfo) -> None:
    for key, value in info.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if name.startswith(_REFUSED_XATTR_PREFIXES):
            raise LayerError(f"unsafe layer entry {info.name!r}: overlay xattr {name!r} is not allowed")
        try:
            os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError as exc:  # e.g. user.* on a symlink, which Linux refuses (so no real layer has one)
            raise LayerError(f"invalid layer entry {info.name!r}: cannot set xattr {name!r}: {exc.strerror}") from None


def _prepare(dest_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise LayerError(f"cannot unpack a layer into {dest}: it exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-unpack-{dest.name}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir(mode=0o755)
    return dest, tmp


def extract_layer(
    stream: BinaryIO | str | os.PathLike[str],
    media_type: str,
    dest_dir: str | os.PathLike[str],
    *,
    expected_diff_id: Digest | str | None,
) -> Digest:
    """Unpack a (compressed) layer into the empty or missing ``dest_dir``; return the verified diffID.

    ``expected_diff_id=None`` skips the check (only for layers whose diffID is unknown yet, like a
    freshly written one); otherwise a mismatch raises :class:`LayerError` and leaves nothing behind.
    """
    expected = parse_digest(expected_diff_id) if isinstance(expected_diff_id, str) else expected_diff_id
    if expected is not None and expected.algorithm != "sha256":
        raise LayerError(f"unsupported diffID algorithm in {expected}")
    dest, tmp = _prepare(dest_dir)
    hasher = hashlib.sha256()
    hashing = Stage(hasher.update, "layer-diffid")

    def decode(emit: Callable[[bytes], None]) -> None:
        with open_layer(stream, media_type) as decoded:
            while chunk := decoded.read(_CHUNK):
                hashing.submit(chunk)
                emit(chunk)

    decoder = Producer(decode, "layer-decode")
    try:
        unpacker = _Unpacker(os.fspath(tmp))
        try:
            reader = TarReader(_checked(decoder))
            for info in reader:
                unpacker.add(info, reader)
        except TarFormatError as exc:
            raise LayerError(f"layer is not a valid tar stream: {exc}") from None
        decoder.drain()  # the rest (end-of-archive padding) is part of the diffID too
        _raise_decode_error(decoder)
        hashing.close()
        unpacker.finish()
        actual = Digest("sha256", hasher.hexdigest())
        if expected is not None and actual != expected:
            raise LayerError(f"layer diffID mismatch: expected {expected}, got {actual}")
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        decoder.abort()
        hashing.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return actual


def _raise_decode_error(decoder: Producer) -> None:
    error = decoder.error
    if error is None:
        return
    if isinstance(error, LayerError):
        raise error
    if isinstance(error, OSError | EOFError | ValueError | zstandard.ZstdError | igzip_lib.IsalError):
        raise LayerError(f"layer stream is corrupt or truncated: {error}") from error
    raise error


def _checked(decoder: Producer) -> Iterator[bytes]:
    """The decoded chunks; a decoding failure surfaces as itself, not as a short tar."""
    yield from decoder
    _raise_decode_error(decoder)


class _ChunkPipe:
    """A blocking file object (read by the unpack thread) pulling chunks from an async iterator.

    Reads are served from a memoryview of the current chunk, so each byte is copied once (into the
    decoder's buffer), not once per read as concatenating and re-slicing a bytes buffer would."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._view = memoryview(b"")
        self._pos = 0
        self._eof = False
        self.cancelled = False

    async def _next(self) -> bytes:
        async for chunk in self._chunks:
            if chunk:
                return bytes(chunk)
        return b""

    def _pull(self) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        while True:
            if self.cancelled:
                future.cancel()
                raise LayerError("layer download was cancelled")
            with contextlib.suppress(TimeoutError):
                chunk = future.result(timeout=0.5)
                break
        if not chunk:
            self._eof = True
        return chunk

    def _fill(self) -> int:
        """Bytes available in the current chunk, pulling the next one when it is used up (0: the end)."""
        while self._pos >= len(self._view) and not self._eof:
            self._view, self._pos = memoryview(self._pull()), 0
        return len(self._view) - self._pos

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = [self._view[self._pos :].tobytes()]
            self._view, self._pos = memoryview(b""), 0
            while not self._eof:
                parts.append(self._pull())
            return b"".join(parts)
        take = min(size, self._fill())
        data = self._view[self._pos : self._pos + take].tobytes()
        self._pos += take
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        take = min(len(buffer), self._fill())
        buffer[:take] = self._view[self._pos : self._pos + take]
        self._pos += take
        return take

    def readable(self) -> bool:
        return True


async def extract_layer_async(
    source: AsyncIterator[bytes] | BinaryIO,
    media_type: str,
    dest_dir: str | os.PathLike[str],
    *,
    expected_diff_id: Digest | str | None,
) -> Digest:
    """:func:`extract_layer` in a worker thread, reading compressed chunks as they arrive."""
    if not hasattr(source, "__anext__"):
        return await asyncio.to_thread(
            extract_layer,
            source,
            media_type,
            dest_dir,
            expected_diff_id=expected_diff_id,  # type: ignore[arg-type]
        )
    pipe = _ChunkPipe(source, asyncio.get_running_loop())  # type: ignore[arg-type]
    task = asyncio.ensure_future(
        asyncio.to_thread(extract_layer, pipe, media_type, dest_dir, expected_diff_id=expected_diff_id)  # type: ignore[arg-type]
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        pipe.cancelled = True
        with contextlib.suppress(BaseException):
            await task
        raise

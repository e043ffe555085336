"""Write an overlay-format diff directory as an OCI layer blob, deterministically and in one pass.

The input is an overlayfs upper dir (or the copying snapshotter's equivalent): deletions are 0/0
character devices and replaced directories carry ``trusted.overlay.opaque=y``. The output follows the
OCI image-spec layer format (layer.md "Whiteouts"): ``.wh.<name>`` files and ``.wh..wh..opq`` markers.

Determinism (two builds of the same tree give the same digest, as BuildKit's differ does): entries are
sorted by byte name, directories come before their children, uname/gname are empty, uid/gid kept,
no atime/ctime, integer mtimes clamped to SOURCE_DATE_EPOCH when given, xattrs sorted, hard links
inside the layer written as links to the first name in walk order, fixed compressor headers.

The tar is generated, hashed (diffID), compressed and hashed again (digest) while streaming to a
temp file next to the destination, then fsynced and renamed into place: never all in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lamina.durable import fsync_dir
from lamina.oci import Digest

from .compression import Compression, Compressor, media_type_for, new_compressor
from .pipeline import Stage

__all__ = ["LayerBlob", "TarStreamWriter", "write_layer"]

_BLOCK = 512
_FLUSH_AT = 1 << 20
_DIRECT = 1 << 16
_CHUNK = 1 << 20
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Overlay bookkeeping and host-specific labels never belong in a layer.
_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux")


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """A written layer: ``digest`` of the blob as stored, ``diff_id`` of the uncompressed tar."""

    path: Path
    digest: Digest
    diff_id: Digest
    size: int
    media_type: str


class _Sink:
    """Hash the tar stream (diffID) and, on another thread, compress, hash (digest) and write it."""

    def __init__(self, out: BinaryIO, compressor: Compressor) -> None:
        self._out = out
        self._compressor = compressor
        self._diff = hashlib.sha256()
        self._blob = hashlib.sha256()
        self._buffer = bytearray()
        self._hashing = Stage(self._diff.update, "layer-diffid")
        self._compressing = Stage(self._compress, "layer-compress")
        self.tar_size = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        if len(data) >= _DIRECT:  # file contents: hand the chunk over without another copy
            self._drain()
            self.tar_size += len(data)
            self._hashing.submit(data)
            self._compressing.submit(data)
            return
        self._buffer += data
        if len(self._buffer) >= _FLUSH_AT:
            self._drain()

    def _drain(self) -> None:
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self.tar_size += len(data)
        self._hashing.submit(data)
        self._compressing.submit(data)

    def _compress(self, data: bytes) -> None:
        self._emit(self._compressor.compress(data))

    def _emit(self, data: bytes) -> None:
        if data:
            self._blob.update(data)
            self._out.write(data)
            self.size += len(data)

    def close(self) -> tuple[Digest, Digest]:
        self._drain()
        self._hashing.close()
        self._compressing.close()
        self._emit(self._compressor.flush())
        return Digest("sha256", self._blob.hexdigest()), Digest("sha256", self._diff.hexdigest())

    def abort(self) -> None:
        self._hashing.abort()
        self._compressing.abort()


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    records: dict[str, str] = {}
    for name in sorted(names):
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        records["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return records


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class TarStreamWriter:
    """Emit tar entries for a directory walk into a sink (used by :func:`write_layer`)."""

    def __init__(self, sink: _Sink, source_date_epoch: int | None) -> None:
        self._sink = sink
        self._epoch = source_date_epoch
        self._links: dict[tuple[int, int], str] = {}

    def _mtime(self, st: os.stat_result) -> int:
        mtime = int(st.st_mtime)
        if self._epoch is not None and mtime > self._epoch:
            return self._epoch
        return max(mtime, 0)

    def _header(self, info: tarfile.TarInfo) -> None:
        info.uname = ""
        info.gname = ""
        self._sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _marker(self, name: str, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.mode = 0
        info.mtime = mtime
        self._header(info)

    def add_tree(self, root: str) -> None:
        self._walk(root, "")

    def _walk(self, root: str, prefix: str) -> None:
        directory = os.path.join(root, prefix) if prefix else root
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if _is_whiteout(st):
                parent, _, base = rel.rpartition("/")
                self._marker((parent + "/" if parent else "") + WHITEOUT_PREFIX + base, self._mtime(st))
                continue
            if stat.S_ISDIR(st.st_mode):
                self._entry(entry.path, rel + "/", st, tarfile.DIRTYPE)
                if _is_opaque(entry.path):
                    self._marker(rel + "/" + OPAQUE_MARKER, self._mtime(st))
                self._walk(root, rel + "/")
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                first = self._links.get(key) if st.st_nlink > 1 else None
                if first is not None:
                    self._entry(entry.path, rel, st, tarfile.LNKTYPE, linkname=first)
                else:
                    if st.st_nlink > 1:
                        self._links[key] = rel
                    self._entry(entry.path, rel, st, tarfile.REGTYPE)
                    self._file_data(entry.path, st.st_size, rel)
            elif stat.S_ISLNK(st.st_mode):
                self._entry(entry.path, rel, st, tarfile.SYMTYPE, linkname=os.readlink(entry.path))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                self._entry(entry.path, rel, st, kind)
            elif stat.S_ISFIFO(st.st_mode):
                self._entry(entry.path, rel, st, tarfile.FIFOTYPE)
            # Sockets cannot be represented in a tar; Docker and BuildKit skip them too.

    def _entry(self, path: str, name: str, st: os.stat_result, kind: bytes, linkname: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid = st.st_uid
        info.gid = st.st_gid
        info.mtime = self._mtime(st)
        info.linkname = linkname
        info.size = st.st_size if kind == tarfile.REGTYPE else 0
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor = os.major(st.st_rdev)
            info.devminor = os.minor(st.st_rdev)
        info.pax_headers = _xattrs(path)
        self._header(info)

    def _file_data(self, path: str, size: int, name: str) -> None:
        remaining = size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            while remaining > 0:
                chunk = os.read(fd, min(_CHUNK, remaining))
                if not chunk:
                    break
                self._sink.write(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        if remaining != 0:
            raise OSError(f"layer source file {name!r} changed size while being archived")
        pad = -size % _BLOCK
        if pad:
            self._sink.write(b"\0" * pad)

    def finish(self) -> None:
        self._sink.write(b"\0" * (2 * _BLOCK))




def write_layer(
    diff_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    compression: Compression = "gzip",
    level: int | None = None,
    source_date_epoch: int | None = None,
) -> LayerBlob:
    """Archive ``diff_dir`` (overlay format) into ``out_dir/<digest hex>``, atomically; see module doc."""
    media_type = media_type_for(compression)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-layer-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        with open(tmp, "wb") as fh:
            sink = _Sink(fh, new_compressor(compression, level))
            try:
                writer = TarStreamWriter(sink, source_date_epoch)
                writer.add_tree(os.fspath(diff_dir))
                writer.finish()
                digest, diff_id = sink.close()
            except BaseException:
                sink.abort()
                raise
            fh.flush()
            os.fsync(fh.fileno())
        final = out / digest.encoded
        os.replace(tmp, final)
        fsync_dir(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return LayerBlob(path=final, digest=digest, diff_id=diff_id, size=sink.size, media_type=media_type)

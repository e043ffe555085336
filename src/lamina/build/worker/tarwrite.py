"""Write an overlay-format diff directory as an OCI layer blob, deterministically and in one pass.

The input is an overlayfs upper dir (or the copying snapshotter's equivalent): deletions are 0/0
character devices and replaced directories carry ``trusted.overlay.opaque=y``. The output follows the
OCI image-spec layer format (layer.md "Whiteouts") the way BuildKit's overlay differ
(``util/overlay.Changes``) and containerd's change writer write it, given the stack the diff was made
on (``lowers``):

- an upper entry the stack already holds unchanged (:func:`lowerview.same_entry`: overlayfs copied it
  up for a hardlink, a no-op ``chmod``, ...) is left out; its directory appears only as the parent of
  something that did change;
- a deletion of something the stack does not hold is left out;
- never a ``.wh..wh..opq`` marker: a directory that replaced a directory gets one ``.wh.NAME`` per child
  of the old one it lacks (and so does each directory below it), sorted in by NAME; one that replaced a
  file, symlink or nothing gets none;
- whiteouts are regular files, mode 0000, owned by 0:0, empty;
- a hardlink group is written once, under the first path in sort order, the other paths as ``hardlink``
  entries to it; a link to a file left out (a lower-layer file) is therefore a plain copy.

Without ``lowers`` (the base is unknown) every upper entry is written and an opaque directory gets the
OCI ``.wh..wh..opq`` marker.

Determinism (two builds of the same tree give the same digest, as BuildKit's differ does): entries are
sorted by byte name, directories come before their children, uname/gname are empty, uid/gid kept,
no atime/ctime, integer mtimes clamped to SOURCE_DATE_EPOCH when given, xattrs sorted, POSIX ustar
headers (PAX records only for what ustar cannot hold), two zero blocks at the end, fixed compressor headers.

The tar is generated, hashed (diffID), compressed and hashed again (digest) while streaming to a
temp file next to the destination, then fsynced and renamed into place: never all in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lamina.durable import fsync_dir
from lamina.oci import Digest

from .compression import Compression, Compressor, media_type_for, new_compressor
from .lowerview import LowerView, is_opaque, is_whiteout, same_entry
from .pipeline import Stage

__all__ = ["LayerBlob", "TarStreamWriter", "write_layer"]

_BLOCK = 512
_NAME, _PREFIX = 100, 155  # ustar name and prefix field sizes
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


class _GoTarInfo(tarfile.TarInfo):
    """Splits a long ustar name where Go's archive/tar does (``splitUSTARPath``: at the last '/' within
    the first 156 bytes), not at the first '/' that fits as Python does: the same name, the same bytes."""

    def _posix_split_name(self, name: str, encoding: str, errors: str) -> tuple[str, str]:
        length = len(name)
        if length > _PREFIX + 1:
            length = _PREFIX + 1
        elif name.endswith("/"):
            length -= 1
        cut = name.rfind("/", 0, length)
        if cut <= 0 or not 0 < len(name) - cut - 1 <= _NAME or cut > _PREFIX:
            raise ValueError(f"name {name!r} does not fit a ustar header")
        return name[:cut], name[cut + 1 :]


class TarStreamWriter:
    """Emit tar entries for a directory walk into a sink (used by :func:`write_layer`); see module doc."""

    def __init__(self, sink: _Sink, source_date_epoch: int | None, view: LowerView | None = None) -> None:
        self._sink = sink
        self._epoch = source_date_epoch
        self._view = view
        self._links: dict[tuple[int, int], str] = {}
        self._pending: list[tuple[str, str, os.stat_result]] = []  # unchanged parent dirs not written yet

    def _mtime(self, st: os.stat_result) -> int:
        mtime = int(st.st_mtime)
        if self._epoch is not None and mtime > self._epoch:
            return self._epoch
        return max(mtime, 0)

    def _header(self, info: tarfile.TarInfo) -> None:
        """A POSIX ustar header when ustar can hold the entry, as Go's archive/tar chooses (ASCII names up
        to 100 bytes, or split at a '/' into a 155-byte prefix; links up to 100; no xattrs); else PAX."""
        info.uname = ""
        info.gname = ""
        if not info.pax_headers:
            try:
                self._sink.write(info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict"))
                return
            except (ValueError, UnicodeEncodeError):
                pass  # a non-ASCII or unsplittable name, a long link, a number too large: PAX records
        self._sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _flush_parents(self) -> None:
        for path, name, st in self._pending:
            self._entry(path, name, st, tarfile.DIRTYPE)
        self._pending.clear()

    def _marker(self, name: str, mtime: int) -> None:
        self._flush_parents()
        info = _GoTarInfo(name)
        info.type = tarfile.REGTYPE
        info.mode = 0
        info.mtime = mtime
        self._header(info)

    def add_tree(self, root: str) -> None:
        self._walk(root, "", replaced=False)

    def _unchanged(self, rel: str, path: str, st: os.stat_result) -> bool:
        if self._view is None:
            return False
        base = self._view.lookup(rel)
        return base is not None and same_entry(base[0], base[1], path, st)

    def _walk(self, root: str, prefix: str, *, replaced: bool) -> None:
        """Write directory ``prefix``'s entries; ``replaced``: it replaced the stack's directory, so each
        child of the old one it lacks gets a whiteout."""
        directory = os.path.join(root, prefix) if prefix else root
        with os.scandir(directory) as it:
            entries: list[tuple[bytes, os.DirEntry[str] | None, str]] = [
                (os.fsencode(e.name), e, e.name) for e in it
            ]
        if replaced and self._view is not None:
            present = {name for _, _, name in entries}
            vanished = self._view.children(prefix.rstrip("/")) - present
            entries += [(os.fsencode(name), None, name) for name in vanished]
        dir_mtime = self._mtime(os.lstat(directory))
        for _, entry, name in sorted(entries, key=lambda item: item[0]):
            rel = prefix + name
            if entry is None:
                self._marker(prefix + WHITEOUT_PREFIX + name, dir_mtime)
                continue
            st = entry.stat(follow_symlinks=False)
            if is_whiteout(st):
                if self._view is None or self._view.lookup(rel) is not None:
                    self._marker(prefix + WHITEOUT_PREFIX + name, self._mtime(st))
                continue
            if stat.S_ISDIR(st.st_mode):
                self._directory(root, entry.path, rel, st, replaced=replaced)
            elif not self._unchanged(rel, entry.path, st):
                self._flush_parents()
                self._file(entry.path, rel, st)

    def _directory(self, root: str, path: str, rel: str, st: os.stat_result, *, replaced: bool) -> None:
        opaque = is_opaque(path)
        if self._view is None:
            self._entry(path, rel + "/", st, tarfile.DIRTYPE)
            if opaque:
                self._marker(rel + "/" + OPAQUE_MARKER, self._mtime(st))
            self._walk(root, rel + "/", replaced=False)
            return
        base = self._view.lookup(rel)
        unchanged = base is not None and same_entry(base[0], base[1], path, st)
        if unchanged:
            self._pending.append((path, rel + "/", st))
        else:
            self._flush_parents()
            self._entry(path, rel + "/", st, tarfile.DIRTYPE)
        self._walk(root, rel + "/", replaced=replaced or (opaque and base is not None))
        if unchanged and self._pending and self._pending[-1][1] == rel + "/":
            self._pending.pop()  # nothing below it changed: an unchanged directory stays out

    def _file(self, path: str, rel: str, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                self._entry(path, rel, st, tarfile.LNKTYPE, linkname=first)
            else:
                if st.st_nlink > 1:
                    self._links[key] = rel
                self._entry(path, rel, st, tarfile.REGTYPE)
                self._file_data(path, st.st_size, rel)
        elif stat.S_ISLNK(st.st_mode):
            self._entry(path, rel, st, tarfile.SYMTYPE, linkname=os.readlink(path))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            self._entry(path, rel, st, kind)
        elif stat.S_ISFIFO(st.st_mode):
            self._entry(path, rel, st, tarfile.FIFOTYPE)
        # Sockets cannot be represented in a tar; Docker and BuildKit skip them too.

    def _entry(self, path: str, name: str, st: os.stat_result, kind: bytes, linkname: str = "") -> None:
        info = _GoTarInfo(name)
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
    lowers: Sequence[str | os.PathLike[str]] | None = None,
) -> LayerBlob:
    """Archive ``diff_dir`` (overlay format) into ``out_dir/<digest hex>``, atomically; ``lowers`` is
    the stack (top first) the diff was made on, None when unknown; see module doc."""
    media_type = media_type_for(compression)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-layer-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        with open(tmp, "wb") as fh:
            sink = _Sink(fh, new_compressor(compression, level))
            try:
                view = LowerView(lowers) if lowers is not None else None
                writer = TarStreamWriter(sink, source_date_epoch, view)
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

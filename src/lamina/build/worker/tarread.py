"""A streaming tar reader over chunks, for unpacking layers fast (POSIX.1-2001 pax, ustar, GNU names).

``tarfile``'s stream mode copies every byte through several Python-level buffers; a layer unpack
is on the critical path of a cache-miss build, so file contents here go straight from the decoded
chunk to ``os.write`` through memoryviews. Header fields are still decoded by
``tarfile.TarInfo.frombuf`` (checksums, base-256 numbers, the ustar prefix); pax records
(path, linkpath, size, uid, gid, mtime, SCHILY.xattr.*) and GNU long names/links are applied here.
GNU sparse files are refused: no image builder writes them into layers.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator

__all__ = ["TarFormatError", "TarReader"]

_BLOCK = 512
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"
_PAX_NUMERIC = {"size": int, "uid": int, "gid": int, "mtime": float}


class TarFormatError(ValueError):
    """The stream is not a tar archive we can read."""


class _Chunks:
    """Exact-size reads over an iterator of byte chunks, without re-buffering large payloads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._view = memoryview(b"")
        self._pos = 0

    def _next(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._view = memoryview(chunk)
                self._pos = 0
                return True
        return False

    def read_exact(self, size: int) -> bytes:
        available = len(self._view) - self._pos
        if size <= available:
            data = self._view[self._pos : self._pos + size].tobytes()
            self._pos += size
            return data
        parts = [self._view[self._pos :].tobytes()]
        missing = size - available
        while missing > 0:
            if not self._next():
                raise TarFormatError("unexpected end of the tar stream")
            take = min(missing, len(self._view))
            parts.append(self._view[:take].tobytes())
            self._pos = take
            missing -= take
        return b"".join(parts)

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to ``fd``; ``fd=-1`` skips them."""
        while size > 0:
            if self._pos >= len(self._view) and not self._next():
                raise TarFormatError("unexpected end of the tar stream")
            end = min(len(self._view), self._pos + size)
            if fd >= 0:
                piece = self._view[self._pos : end]
                while piece:
                    piece = piece[os.write(fd, piece) :]
            size -= end - self._pos
            self._pos = end

    def at_end(self) -> bool:
        return self._pos >= len(self._view) and not self._next()


def _parse_pax(data: bytes, entry: str) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise TarFormatError(f"invalid pax header before {entry!r}")
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError(f"invalid pax record before {entry!r}")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _apply_pax(info: tarfile.TarInfo, records: dict[str, str]) -> None:
    for key, value in records.items():
        if key.startswith("GNU.sparse."):
            raise TarFormatError(f"unsupported layer entry {info.name!r}: GNU sparse file")
        if key == "path":
            info.name = value
        elif key == "linkpath":
            info.linkname = value
        elif key in _PAX_NUMERIC:
            try:
                setattr(info, key, _PAX_NUMERIC[key](value))
            except ValueError:
                raise TarFormatError(f"invalid pax {key}={value!r} for {info.name!r}") from None
        elif key in ("uname", "gname"):
            setattr(info, key, value)
    info.pax_headers = records


class TarReader:
    """Iterate over members; after each, the caller must consume its data with :meth:`copy_data`
    (or let the next iteration skip it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._src = _Chunks(chunks)
        self._pending = 0  # unread data + padding of the current member
        self._global: dict[str, str] = {}

    def copy_data(self, fd: int, info: tarfile.TarInfo) -> None:
        self._src.copy_to(fd, info.size)
        self._pending -= info.size

    def _skip_pending(self) -> None:
        if self._pending:
            self._src.copy_to(-1, self._pending)
            self._pending = 0

    def _read_block(self) -> bytes:
        return self._src.read_exact(_BLOCK)

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            info = self._next()
            if info is None:
                return
            yield info

    def _payload(self, info: tarfile.TarInfo) -> bytes:
        data = self._src.read_exact(info.size)
        self._src.copy_to(-1, -info.size % _BLOCK)
        return data

    def _next(self) -> tarfile.TarInfo | None:
        self._skip_pending()
        records: dict[str, str] = dict(self._global)
        long_name: str | None = None
        long_link: str | None = None
        first = True
        while True:
            if first and self._src.at_end():
                return None  # no end-of-archive blocks: accepted, as Go's archive/tar does
            first = False
            block = self._read_block()
            if block == bytes(_BLOCK):
                return None  # end of archive (the second zero block and padding are drained by the caller)
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise TarFormatError(f"invalid tar header: {exc}") from None
            if info.type == tarfile.XHDTYPE:
                records.update(_parse_pax(self._payload(info), info.name))
            elif info.type == tarfile.XGLTYPE:
                self._global.update(_parse_pax(self._payload(info), info.name))
                records.update(self._global)
            elif info.type == _GNU_LONGNAME:
                long_name = self._payload(info).rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type == _GNU_LONGLINK:
                long_link = self._payload(info).rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type == tarfile.GNUTYPE_SPARSE:
                raise TarFormatError(f"unsupported layer entry {info.name!r}: GNU sparse file")
            else:
                break
        if long_name is not None:
            info.name = long_name
        if long_link is not None:
            info.linkname = long_link
        _apply_pax(info, records)
        if not info.isreg() and info.type in tarfile.SUPPORTED_TYPES:
            info.size = 0  # like tarfile: only regular files (and unknown types) carry data
        self._pending = info.size + (-info.size % _BLOCK)
        return info

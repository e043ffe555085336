"""A ``RUN --mount=type=cache`` directory as content-addressed packs (tars), and the tar stream they unpack as.

Splitting (what makes the upload incremental): the directory is walked in byte order of the names,
directories before their children, and the entries are grouped into packs by their *names*, as
content-defined chunking does with bytes: a pack ends after an entry whose name hashes to a boundary
(1 in :data:`BOUNDARY`) once it holds :data:`MIN_PACK` bytes, and always at :data:`MAX_PACK`; a file of
``MAX_PACK`` or more is a pack of its own. Adding, changing or removing a file therefore changes the
pack it falls in (and, when a size cut moves, the following ones up to the next name boundary), while
every other pack keeps its bytes and its digest, so the exporter finds it already at the cache (``HEAD``)
and uploads nothing.

Each pack is a deterministic tar: POSIX ustar headers (PAX records only for what ustar cannot hold),
numeric owners with empty user/group names, the cache directory itself first (``./``: its owner and
mode), integer file times, directory times zeroed (a cache tool never reads them, and a new file would
otherwise change its directory's pack), modes masked with
``0o755`` (what the importing side's safe extraction, Python's ``tar`` filter, keeps: so an imported
cache re-exports to the same bytes), two zero blocks at the end. Regular files, directories, symbolic
links and hard links within a pack are kept; sockets, devices, FIFOs and extended attributes are not
(nothing a cache directory needs). A pack is stored zstd-compressed (``.tar+zstd``, level 1); its diffID (the
sha256 of the tar) names it before it is compressed, so a pack the cache already holds is never
compressed again.

:class:`PackStream` is the import side: the packs (verified blobs) decompressed one after another with
each one's end-of-archive blocks left out, and one at the very end: a single tar stream, which the
cache-mount store extracts with its safe extraction.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from lamina.oci import Digest

if TYPE_CHECKING:
    from lamina.build.worker.compression import Compressor

__all__ = [
    "BOUNDARY",
    "MAX_PACK",
    "MIN_PACK",
    "PACK_MEDIA_TYPE",
    "Entry",
    "PackStream",
    "Writable",
    "check_pack",
    "compress_pack",
    "diff_id",
    "plan_packs",
    "walk",
    "write_pack",
]

PACK_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
MIN_PACK = 2 * 1024**2  # a pack ends at a name boundary only once it holds this much
MAX_PACK = 8 * 1024**2  # and always here; a file this large is a pack of its own
BOUNDARY = 16  # one name in 16 is a boundary
LEVEL = 1  # zstd level: about 2.5x level 3's speed here for 4% more bytes (apt and pip caches, measured)
_BLOCK = 512
_TRAILER = 2 * _BLOCK
_CHUNK = 1 << 20


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a cache directory: its name (``/``-separated, relative; directories end with ``/``)."""

    name: str
    kind: str  # "dir" | "file" | "symlink"
    size: int  # bytes of a regular file, else 0
    st: os.stat_result

    @property
    def weight(self) -> int:
        """Bytes the entry takes in a tar (header + padded data)."""
        return _BLOCK + -(-self.size // _BLOCK) * _BLOCK


def walk(root: Path) -> list[Entry]:
    """``root`` itself (``./``: the cache directory's owner and mode) and the entries under it, in tar order
    (byte order, a directory before its children)."""
    out: list[Entry] = [Entry("./", "dir", 0, os.lstat(root))]

    def visit(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: os.fsencode(e.name))
        for child in children:
            st = child.stat(follow_symlinks=False)
            name = prefix + child.name
            if stat.S_ISDIR(st.st_mode):
                out.append(Entry(name + "/", "dir", 0, st))
                visit(child.path, name + "/")
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(name, "file", st.st_size, st))
            elif stat.S_ISLNK(st.st_mode):
                out.append(Entry(name, "symlink", 0, st))

    visit(os.fspath(root), "")
    return out


def _boundary(name: str) -> bool:
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=4).digest()
    return int.from_bytes(digest, "big") % BOUNDARY == 0


def plan_packs(entries: Sequence[Entry]) -> list[list[Entry]]:
    """Group ``entries`` (in tar order) into packs; see the module docstring. Pure: names and sizes only."""
    packs: list[list[Entry]] = []
    current: list[Entry] = []
    weight = 0
    for entry in entries:
        if entry.size >= MAX_PACK:
            if current:
                packs.append(current)
            packs.append([entry])
            current, weight = [], 0
            continue
        current.append(entry)
        weight += entry.weight
        if weight >= MAX_PACK or (weight >= MIN_PACK and _boundary(entry.name)):
            packs.append(current)
            current, weight = [], 0
    if current:
        packs.append(current)
    return packs


def _header(info: tarfile.TarInfo) -> bytes:
    try:
        return info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
    except (ValueError, UnicodeEncodeError):
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")  # non-ASCII or long names


def write_pack(root: Path, pack: Sequence[Entry], out: Writable) -> None:
    """Write ``pack`` (entries of ``root``) as a deterministic tar into ``out`` (see the module docstring).

    A file that changes size while it is read raises OSError naming it (the export skips that cache)."""
    links: dict[tuple[int, int], str] = {}
    for entry in pack:
        st = entry.st
        info = tarfile.TarInfo(entry.name)
        info.mode = stat.S_IMODE(st.st_mode) & 0o755
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = 0 if entry.kind == "dir" else max(int(st.st_mtime), 0)
        path = root / entry.name
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
            out.write(_header(info))
            continue
        if entry.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            out.write(_header(info))
            continue
        first = links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is not None:
            info.type, info.linkname = tarfile.LNKTYPE, first
            out.write(_header(info))
            continue
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = entry.name
        info.type, info.size = tarfile.REGTYPE, entry.size
        out.write(_header(info))
        _copy_data(path, entry, out)
    out.write(b"\0" * _TRAILER)


def _copy_data(path: Path, entry: Entry, out: Writable) -> None:
    remaining = entry.size
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while remaining > 0:
            chunk = os.read(fd, min(_CHUNK, remaining))
            if not chunk:
                break
            out.write(chunk)
            remaining -= len(chunk)
        if remaining or os.read(fd, 1):
            raise OSError(f"{entry.name} changed size while it was read")
    finally:
        os.close(fd)
    pad = -entry.size % _BLOCK
    if pad:
        out.write(b"\0" * pad)


class _Sink:
    """Where a pack's tar goes: hashed (the diffID), and compressed into ``out`` when given."""

    def __init__(self, out: Writable | None = None) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.out = out
        self.compressor: Compressor | None = None
        if out is not None:
            from lamina.build.worker.compression import new_compressor  # zstd: only when a pack is written

            self.compressor = new_compressor("zstd", LEVEL)

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.out is not None and self.compressor is not None:
            self.out.write(self.compressor.compress(data))
        return len(data)

    def close(self) -> None:
        if self.out is not None and self.compressor is not None:
            self.out.write(self.compressor.flush())


def diff_id(root: Path, pack: Sequence[Entry]) -> Digest:
    """The sha256 of ``pack``'s tar, computed without writing it anywhere."""
    sink = _Sink()
    write_pack(root, pack, sink)
    return Digest("sha256", sink.hash.hexdigest())


def compress_pack(root: Path, pack: Sequence[Entry], out: Writable) -> Digest:
    """Write ``pack`` zstd-compressed into ``out``; returns its diffID (the caller hashes ``out``)."""
    sink = _Sink(out)
    write_pack(root, pack, sink)
    sink.close()
    return Digest("sha256", sink.hash.hexdigest())


class PackStream(io.RawIOBase):
    """The tar stream of several packs (paths of verified ``.tar+zstd`` blobs, in pack order): each one
    decompressed without its two end-of-archive blocks, then those blocks once (see the module docstring)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._chunks = self._generate(list(paths))
        self._view = memoryview(b"")

    def _generate(self, paths: list[Path]) -> Iterator[bytes]:
        import zstandard

        for path in paths:
            held = b""
            with open(path, "rb") as raw:
                reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
                try:
                    while chunk := reader.read(_CHUNK):
                        held += chunk
                        if len(held) > _TRAILER:
                            yield held[:-_TRAILER]
                            held = held[-_TRAILER:]
                except zstandard.ZstdError as exc:
                    raise OSError(f"cache-mount pack {path.name} is not a zstd stream: {exc}") from None
            if held != b"\0" * _TRAILER:
                raise OSError(f"cache-mount pack {path.name} does not end with a tar end-of-archive")
        yield b"\0" * _TRAILER

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


class _Hashing(io.RawIOBase):
    """Reads through ``source`` and hashes every byte read."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        self.hash.update(data)
        buffer[: len(data)] = data
        return len(data)


_CHECK_ROOT = "/nonexistent-lamina-cachemount"  # where the filter resolves names (nothing is written there)


def check_pack(path: Path, expected: Digest) -> None:
    """Before anything of a pack is extracted: decompress it, check that its tar is ``expected`` (its diffID)
    and that every entry passes the store's safe extraction (Python's ``tar`` filter); OSError if not."""
    import zstandard

    try:
        with open(path, "rb") as raw:
            reader = _Hashing(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    tarfile.tar_filter(member, _CHECK_ROOT)
            while reader.read(_CHUNK):
                pass  # the end-of-archive blocks are part of the diffID too
    except zstandard.ZstdError as exc:
        raise OSError(f"not a zstd stream: {exc}") from None
    except tarfile.FilterError as exc:
        raise OSError(f"unsafe entry: {exc}") from None
    except tarfile.TarError as exc:
        raise OSError(f"not a tar: {exc}") from None
    actual = Digest("sha256", reader.hash.hexdigest())
    if actual != expected:
        raise OSError(f"its tar is {actual}, the cache says {expected}")

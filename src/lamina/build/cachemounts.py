"""The local store of ``RUN --mount=type=cache`` directories, kept between builds with BuildKit's sharing modes.

Layout (under the build state directory; every name is derived from the cache's key, never from a path
the Dockerfile wrote)::

    <root>/cachemounts/<key>/meta.json   {"id": ..., "seed": ...}: what the key was made from
    <root>/cachemounts/<key>/.lock       held while instances are scanned or created (flock)
    <root>/cachemounts/<key>/<n>/        instance n: the directory a RUN mounts
    <root>/cachemounts/<key>/<n>.lock    held by every RUN that has instance n mounted (flock)

The key is BuildKit's ``getRefCacheDir`` key: the cache ``id`` plus the identity of what seeds a new
directory (nothing; the "settings cache mount permissions" mkdir of ``mode``/``uid``/``gid``; or a
``from=`` source), so the same id with other permissions or another seed is another cache, as in BuildKit.
Sharing (``pb.CacheSharingOpt``): ``shared`` RUNs use the first instance not held exclusively, together
(``LOCK_SH``); ``private`` takes the first instance no one uses, or makes a new one; ``locked`` takes the
first free one and otherwise waits until one is free. Locks are ``flock``s on open file descriptions, so
they hold between RUNs of one build as between concurrent ``lamina build`` processes sharing the state
directory, and vanish with a killed process. A new instance is seeded in a temporary directory and
renamed into place, so a crash never leaves a half-made cache.

The seam for the remote cache (issue 10): :meth:`CacheMountStore.entries` lists what is stored,
:meth:`~CacheMountStore.write_tar` streams an instance as a tar, and a :class:`CacheMountSource` given to
the store is asked lazily, only when a RUN needs a key that has no instance yet, for a tar to start from.
``used`` names the caches this store's RUNs mounted, :meth:`~CacheMountStore.last_used` tells which instance
was mounted last and :meth:`~CacheMountStore.reading` holds one shared-locked while an exporter reads it
(:mod:`lamina.build.cache.mountsync`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

__all__ = [
    "CacheMountEntry",
    "CacheMountError",
    "CacheMountLease",
    "CacheMountSource",
    "CacheMountStore",
    "Seed",
    "cache_key",
    "copy_tree",
]

Sharing = Literal["shared", "private", "locked"]
_POLL = 0.1  # BuildKit retries a locked cache every 100ms


class CacheMountError(Exception):
    """A cache directory could not be made or locked; the message names the cache id."""


@dataclass(frozen=True, slots=True)
class Seed:
    """What a new, empty cache directory starts as: ``source`` (a host directory to copy, e.g. a stage's
    ``from=`` path) or a fresh directory with ``mode``/``uid``/``gid``; ``identity`` goes into the key."""

    identity: Any = None  # JSON-able: None (empty), {"mkdir": [...]} or {"from": ..., "source": ...}
    source: Path | None = None
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


def cache_key(cache_id: str, seed: Seed) -> str:
    """The store's name for cache ``cache_id`` seeded by ``seed`` (32 hex digits)."""
    text = json.dumps({"id": cache_id, "seed": seed.identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class CacheMountEntry:
    """One stored instance (for an export): the cache id, its key, the instance's directory."""

    id: str
    key: str
    instance: int
    path: Path


class CacheMountSource(Protocol):
    """Where a key with no local instance may come from (the remote cache): a tar stream, or None."""

    def open(self, cache_id: str, key: str) -> IO[bytes] | None: ...


class CacheMountLease:
    """A cache directory mounted by one RUN; :meth:`release` (or leaving ``with``) drops its lock."""

    def __init__(self, path: Path, fd: int, key: str) -> None:
        self.path = path
        self.key = key
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the open file description drops its flock
            self._fd = None

    def __enter__(self) -> CacheMountLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def copy_tree(source: Path, dest: Path) -> None:
    """Copy ``source``'s contents into the existing dir ``dest`` keeping owners, modes, times, links and
    xattrs (``cp -a``: the tool that already gets every file type right)."""
    result = subprocess.run(["cp", "-a", "--", f"{source}/.", f"{dest}/"], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise CacheMountError(f"copying {source}: {result.stderr.strip() or 'cp failed'}")


class CacheMountStore:
    """Cache-mount directories under ``root`` (``<state>/cachemounts``); see the module docstring."""

    def __init__(self, root: Path, source: CacheMountSource | None = None) -> None:
        self.root = Path(root)
        self.source = source
        self.used: dict[str, str] = {}  # key -> cache id of every cache a RUN mounted (what the remote cache exports)

    def acquire(
        self,
        cache_id: str,
        sharing: Sharing,
        seed: Seed,
        *,
        timeout: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> CacheMountLease:
        """The instance this RUN mounts, locked for ``sharing``; blocks (``locked``) until one is free.

        Blocking: call it in a thread. ``timeout`` (seconds) bounds the wait of ``locked``; ``cancelled``
        ends it early (the build failed or was interrupted meanwhile)."""
        key = cache_key(cache_id, seed)
        self.used[key] = cache_id
        directory = self.root / key
        directory.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._scan_lock(directory):
                self._write_meta(directory, cache_id, seed)
                instances = self._instances(directory)
                for n in instances:
                    lease = self._try_lock(directory, n, key, exclusive=sharing != "shared")
                    if lease is not None:
                        return lease
                if sharing != "locked" or not instances:
                    n = (instances[-1] + 1) if instances else 0
                    self._create(directory, n, cache_id, key, seed, first=not instances)
                    lease = self._try_lock(directory, n, key, exclusive=sharing != "shared")
                    if lease is None:  # only we know the new number while holding the scan lock
                        raise CacheMountError(f"cache mount {cache_id!r}: new directory {n} locked by another build")
                    return lease
            if deadline is not None and time.monotonic() > deadline:
                raise CacheMountError(f"cache mount {cache_id!r} (sharing=locked): still in use after {timeout}s")
            if cancelled is not None and cancelled():
                raise CacheMountError(f"cache mount {cache_id!r} (sharing=locked): wait cancelled")
            time.sleep(_POLL)

    # -- the remote cache's seam ----------------------------------------------------------------------

    def entries(self) -> list[CacheMountEntry]:
        """Every stored instance, by key then instance number."""
        out = []
        if not self.root.is_dir():
            return out
        for directory in sorted(self.root.iterdir()):
            try:
                meta = json.loads((directory / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            for n in self._instances(directory):
                out.append(CacheMountEntry(str(meta["id"]), directory.name, n, directory / str(n)))
        return out

    def last_used(self, entry: CacheMountEntry) -> float:
        """When a RUN last mounted the instance (its lock file's mtime; 0 if never)."""
        try:
            return (entry.path.parent / f"{entry.instance}.lock").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    @contextlib.contextmanager
    def reading(self, entry: CacheMountEntry) -> Iterator[Path]:
        """Hold the instance shared-locked while it is read (no ``private``/``locked`` RUN writes into it)."""
        fd = os.open(entry.path.parent / f"{entry.instance}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield entry.path
        finally:
            os.close(fd)

    def write_tar(self, entry: CacheMountEntry, fileobj: IO[bytes]) -> None:
        """Stream the instance as an uncompressed tar (sorted, numeric owners) into ``fileobj``. Shared-locked
        meanwhile, so a ``private``/``locked`` RUN never writes into it while it is read."""
        lock_path = entry.path.parent / f"{entry.instance}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in _walk_sorted(entry.path):
                    arcname = path.relative_to(entry.path).as_posix()
                    info = tar.gettarinfo(str(path), arcname=arcname)
                    if info is None:  # a socket: nothing a tar (or a later RUN) could use
                        continue
                    info.uname = info.gname = ""
                    if info.isreg():
                        with open(path, "rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
        finally:
            os.close(fd)

    # -- internals ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _scan_lock(self, directory: Path) -> Iterator[None]:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _write_meta(directory: Path, cache_id: str, seed: Seed) -> None:
        meta = directory / "meta.json"
        if not meta.exists():
            partial = directory / f".meta.{os.getpid()}"
            partial.write_text(json.dumps({"id": cache_id, "seed": seed.identity}, sort_keys=True))
            os.replace(partial, meta)

    @staticmethod
    def _instances(directory: Path) -> list[int]:
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())

    @staticmethod
    def _try_lock(directory: Path, n: int, key: str, *, exclusive: bool) -> CacheMountLease | None:
        fd = os.open(directory / f"{n}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.utime(directory / f"{n}.lock")  # last use, for a future prune
        return CacheMountLease(directory / str(n), fd, key)

    def _create(self, directory: Path, n: int, cache_id: str, key: str, seed: Seed, *, first: bool) -> None:
        partial = directory / f".{n}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            partial.mkdir(mode=0o700)
            imported = first and self._import(partial, cache_id, key)
            if not imported:
                if seed.source is not None:
                    st = os.stat(seed.source)
                    os.chmod(partial, st.st_mode & 0o7777)
                    os.chown(partial, st.st_uid, st.st_gid)
                    copy_tree(seed.source, partial)
                else:
                    os.chmod(partial, seed.mode)
                    os.chown(partial, seed.uid, seed.gid)
            os.rename(partial, directory / str(n))
        except OSError as exc:
            raise CacheMountError(f"cache mount {cache_id!r}: cannot create its directory: {exc}") from None
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)

    def _import(self, partial: Path, cache_id: str, key: str) -> bool:
        """Fill ``partial`` from the remote source's tar, if it has one for this key."""
        if self.source is None:
            return False
        stream = self.source.open(cache_id, key)
        if stream is None:
            return False
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            tar.extractall(partial, numeric_owner=True, filter="tar")
        return True


def _walk_sorted(root: Path) -> Iterator[Path]:
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(path)


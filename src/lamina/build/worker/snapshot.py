"""Root filesystems for build steps: a stack of unpacked layers plus a fresh writable diff dir.

``Snapshotter.prepare(lowers)`` (lowers top first, as overlayfs orders them) returns an
:class:`ActiveSnapshot`: inside ``with`` its ``rootfs`` is the merged tree to run or copy into; after
the ``with`` its ``upper`` holds the step's changes in overlay format (whiteouts as 0/0 char devices,
replaced dirs opaque) ready for :func:`write_layer` or :meth:`LayerStore.adopt`; ``discard()`` removes
what is left. The overlay implementation mounts the kernel's overlayfs (containerd's snapshotter
model); the copying one (copydiff.py, with ``detect_snapshotter``) is the fallback where overlay cannot
be mounted.

Mountpoints: runc creates missing mountpoints in the rootfs. BuildKit removes afterwards the stubs of
/etc/hosts, /etc/resolv.conf and the RUN's own mounts (with the parents they needed) but keeps /proc,
/sys and /dev (see ``runmounts.mount_stubs``). Like Docker's "-init" layer, the stubs to remove are
created in a small extra lower dir on top of the stack, so they never reach the upper dir at all.

Layout::

    ROOT/snapshots/<id>/{upper,work,merged,init}   one prepared snapshot
    ROOT/l/<10 hex>  -> <lower dir>                short names, so ~370 lowers fit in one mount call
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from .placement import mark_top_directory

__all__ = [
    "RUN_MOUNTPOINTS",
    "ActiveSnapshot",
    "OverlaySnapshotter",
    "SnapshotError",
    "Snapshotter",
    "cleanup_stale_snapshots",
    "lookup_in_stack",
    "process_alive",
]

# (path, is_dir): the stubs of what every RUN container binds besides runc's /proc, /sys and /dev
# (runtime_spec.runtime_config), which BuildKit removes after the RUN; a RUN's mounts add their own.
RUN_MOUNTPOINTS: tuple[tuple[str, bool], ...] = (
    ("etc/hosts", False),
    ("etc/resolv.conf", False),
)
# Options that keep the upper dir a plain, complete diff: no redirects (renamed dirs are copied),
# no metadata-only copy-ups, no inode index.
_OVERLAY_OPTIONS = "index=off,redirect_dir=off,metacopy=off"
# fsync and syncfs inside the mount are no-ops (Linux 5.10+): what a step writes is either archived
# into a layer blob, which write_layer fsyncs, or thrown away, so the step's own syncs (dpkg's, pip's,
# a database init's) only wait for a disk nothing will read back after a crash: a crash mid-step
# leaves a snapshot that is removed, never reused. apt-get installing gcc: 4.7 -> 4.1 s here.
_VOLATILE = "volatile"
_MAX_OPTIONS = 4000  # the kernel copies mount data into one page (4096 bytes)
_MNT_DETACH = 2


class SnapshotError(OSError):
    """A snapshot could not be mounted or prepared."""


class ActiveSnapshot(Protocol):
    rootfs: Path
    upper: Path

    def __enter__(self) -> ActiveSnapshot: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def discard(self) -> None: ...


class Snapshotter(Protocol):
    """Prepares writable root filesystems over unpacked layer dirs (``lowers``: top first)."""

    def prepare(
        self, lowers: Sequence[Path], *, mountpoints: Sequence[tuple[str, bool]] = RUN_MOUNTPOINTS
    ) -> ActiveSnapshot: ...

    def view(self, lowers: Sequence[Path]) -> contextlib.AbstractContextManager[Path]:
        """The merged tree of ``lowers`` to read from; changes to it are discarded."""
        ...


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def lookup_in_stack(lowers: Sequence[Path], rel: str) -> Path | None:
    """The entry ``rel`` resolves to in the merged view of ``lowers`` (top first), or None if absent.

    Honours whiteouts and opaque dirs; a non-directory ancestor (e.g. a symlinked /etc) is returned
    as the entry itself, meaning "occupied, leave it alone".
    """
    parts = [p for p in rel.split("/") if p]
    for layer in lowers:
        current = os.fspath(layer)
        opaque = False
        for index, part in enumerate(parts):
            path = os.path.join(current, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                break
            if _is_whiteout(st):
                return None
            if index == len(parts) - 1 or not stat.S_ISDIR(st.st_mode):
                return Path(path)
            opaque = opaque or _is_opaque(path)
            current = path
        if opaque:
            return None
    return None


def build_init_layer(lowers: Sequence[Path], init: Path, mountpoints: Sequence[tuple[str, bool]]) -> bool:
    """Create in ``init`` the mountpoints missing from the stack; parents copy the stack's metadata."""
    created = False
    for rel, is_dir in mountpoints:
        if lookup_in_stack(lowers, rel) is not None:
            continue
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            target = init / parent
            if target.is_dir():
                continue
            existing = lookup_in_stack(lowers, parent)
            if existing is not None and not existing.is_dir():
                break  # a symlinked /etc: let the runtime resolve it
            target.mkdir(mode=0o755, parents=True)
            if existing is not None:
                st = os.lstat(existing)
                os.chown(target, st.st_uid, st.st_gid)
                os.chmod(target, stat.S_IMODE(st.st_mode))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            path = init / rel
            if is_dir:
                path.mkdir(mode=0o755, exist_ok=True)
            else:
                path.touch(mode=0o644, exist_ok=True)
            created = True
    if created:
        _restore_times(lowers, init)
    return created


def _restore_times(lowers: Sequence[Path], init: Path) -> None:
    """Creating children bumped the parents' mtimes; put back the stack's, deepest first."""
    dirs = sorted((p for p in init.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for path in dirs:
        existing = lookup_in_stack(lowers, str(path.relative_to(init)))
        if existing is not None and existing.is_dir():
            st = os.lstat(existing)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def claim(directory: Path) -> None:
    """Create a snapshot dir owned by this process (see :func:`cleanup_stale_snapshots`)."""
    directory.mkdir(parents=True)
    (directory / "owner").write_text(str(os.getpid()))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a PID owning a snapshot or an unpack dir; EPERM means it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounts_under(prefix: Path) -> list[Path]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            point = line.split(" ")[4]
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
            if point == str(prefix) or point.startswith(str(prefix) + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: -len(p.parts))


def cleanup_stale_snapshots(root: str | os.PathLike[str]) -> int:
    """Unmount and remove snapshots left by build processes that died (killed, power loss);
    snapshots of live processes are left alone. Returns how many were removed."""
    removed = 0
    snapshots = Path(root) / "snapshots"
    if not snapshots.is_dir():
        return 0
    for directory in snapshots.iterdir():
        if directory.name.startswith("."):
            continue
        try:
            owner = int((directory / "owner").read_text())
        except (OSError, ValueError):
            owner = None
        if owner is not None and process_alive(owner):
            continue
        for mount in _mounts_under(directory):
            _umount(mount)
        shutil.rmtree(directory, ignore_errors=True)
        removed += 1
    return removed


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _umount(target: Path) -> None:
    path = os.fsencode(target)
    for _ in range(20):
        if _libc.umount2(path, 0) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EINVAL:  # not mounted (any more)
            return
        if err != errno.EBUSY:
            break
        os.sched_yield()
    if _libc.umount2(path, _MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
        raise SnapshotError(f"cannot unmount {target}: {os.strerror(ctypes.get_errno())}")


class _OverlaySnapshot:
    def __init__(self, owner: OverlaySnapshotter, lowers: Sequence[Path], mountpoints: Sequence[tuple[str, bool]]):
        self._owner = owner
        self.dir = owner.root / "snapshots" / os.urandom(8).hex()
        self.upper = self.dir / "upper"
        self.rootfs = self.dir / "merged"
        self._work = self.dir / "work"
        # A layer can recur in a chain (two RUNs that leave the same, often empty, diff): overlayfs refuses a
        # repeated lower dir (ELOOP). Keeping only its topmost place gives the same merged view, since every
        # path the lower copy could decide, the identical upper copy decides first.
        self._lowers = list(dict.fromkeys(lowers))
        self._mountpoints = tuple(mountpoints)
        self._mounted = False

    def __enter__(self) -> _OverlaySnapshot:
        claim(self.dir)
        try:
            for path in (self.upper, self._work, self.rootfs):
                path.mkdir()
            os.chmod(self.upper, 0o755)
            lowers = list(self._lowers)
            init = self.dir / "init"
            init.mkdir()
            if self._mountpoints and build_init_layer(lowers, init, self._mountpoints):
                lowers.insert(0, init)
            if not lowers:
                lowers = [init]  # overlayfs needs at least one lower dir; FROM scratch gets an empty one
            self._owner._mount(lowers, self.upper, self._work, self.rootfs)
            self._mounted = True
        except BaseException:
            self.discard()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._mounted:
            _umount(self.rootfs)
            self._mounted = False
        shutil.rmtree(self._work, ignore_errors=True)
        if exc_type is not None:
            self.discard()

    def discard(self) -> None:
        if self._mounted:
            _umount(self.rootfs)
            self._mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)


class OverlaySnapshotter:
    """Kernel overlayfs: lowers are the unpacked layer dirs, each step gets a fresh upper and work dir."""

    def __init__(self, root: str | os.PathLike[str], *, options: str = _OVERLAY_OPTIONS) -> None:
        self.root = Path(root)
        self.options = options
        self.volatile = True  # dropped for good after a kernel refuses it (before 5.10)
        self._links = self.root / "l"
        self._links.mkdir(parents=True, exist_ok=True)
        (self.root / "snapshots").mkdir(parents=True, exist_ok=True)
        mark_top_directory(self.root / "snapshots")  # uppers (pip's, COPY's files) in uncrowded block groups

    def prepare(
        self, lowers: Sequence[Path], *, mountpoints: Sequence[tuple[str, bool]] = RUN_MOUNTPOINTS
    ) -> _OverlaySnapshot:
        return _OverlaySnapshot(self, lowers, mountpoints)

    @contextlib.contextmanager
    def view(self, lowers: Sequence[Path]) -> Iterator[Path]:
        """A merged view of ``lowers`` to read from (e.g. ``COPY --from``); writes to it are discarded."""
        snapshot = self.prepare(lowers, mountpoints=())
        try:
            with snapshot:
                yield snapshot.rootfs
        finally:
            snapshot.discard()

    def _short(self, lower: Path) -> str:
        """A short symlink name in ROOT/l for ``lower``, stable for a given path."""
        target = os.path.abspath(lower)
        full = hashlib.sha256(os.fsencode(target)).hexdigest()
        for length in (10, 16, 64):
            name = full[:length]
            link = self._links / name
            try:
                if os.readlink(link) == target:
                    return name
                continue  # a (vanishingly rare) prefix collision: take a longer name
            except FileNotFoundError:
                pass
            tmp = self._links / f".{name}.{os.urandom(4).hex()}"
            os.symlink(target, tmp)
            os.replace(tmp, link)
            return name
        raise SnapshotError(f"cannot create a short link for {target}")

    def _mount(self, lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
        shorts = [self._short(p) for p in lowers]
        try:
            self._mount_short(shorts, upper, work, target)
        finally:
            # Links to per-snapshot dirs (init layers, probes) are not needed once mounted.
            snapshots = os.path.abspath(self.root / "snapshots") + "/"
            for lower, name in zip(lowers, shorts, strict=True):
                if os.path.abspath(lower).startswith(snapshots):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._links / name)

    def _mount_short(self, shorts: list[str], upper: Path, work: Path, target: Path) -> None:
        options = f"lowerdir={':'.join(shorts)},upperdir={upper},workdir={work}"
        extra = [o for o in (self.options, _VOLATILE if self.volatile else "") if o]
        if extra:
            options += "," + ",".join(extra)
        if len(options) > _MAX_OPTIONS:
            raise SnapshotError(f"too many layers to mount at once ({len(shorts)} lower dirs)")
        try:
            self._run_mount(options, len(shorts), target)
        except SnapshotError:
            if not self.volatile:
                raise
            self._run_mount(options.removesuffix("," + _VOLATILE), len(shorts), target)
            self.volatile = False  # an older kernel: the mount works, only without volatile

    def _run_mount(self, options: str, count: int, target: Path) -> None:
        # mount(8) with cwd=ROOT/l: the kernel resolves the relative lower names against our cwd,
        # which a subprocess changes without racing other threads of this process.
        result = subprocess.run(
            ["mount", "-n", "-t", "overlay", "overlay", "-o", options, str(target)],
            cwd=self._links,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            message = result.stderr.strip() or f"mount exited {result.returncode}"
            raise SnapshotError(f"overlay mount of {count} layers failed: {message}")

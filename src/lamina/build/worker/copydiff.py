"""The copying snapshotter: the fallback where overlayfs cannot be mounted (e.g. nested in overlay on
an old kernel, or on filesystems without trusted xattrs for the lower dirs).

``prepare`` applies the lower dirs (overlay format, bottom first) onto a fresh directory by copying
(each path of a lower hardlink group separately, so that writes break links as overlayfs's copy-up does),
creates missing runtime mountpoints, and records every entry's identity (inode, ctime, mode, owner,
size, mtime). On exit it walks the tree again and writes the changes into ``upper`` in the same
overlay format the kernel would produce: new or changed entries (with their ancestors, as overlay's
copy-up does), a 0/0 character device for each deleted entry, and the opaque xattr on a directory that
replaced another entry (whiteouts for its vanished children where that xattr cannot be set).
``write_layer`` then treats both snapshotters' output identically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from .lowerview import is_whiteout
from .snapshot import RUN_MOUNTPOINTS, OverlaySnapshotter, Snapshotter, claim

__all__ = ["CopySnapshotter", "detect_snapshotter"]

_SKIP_XATTRS = ("trusted.overlay.", "user.overlay.")


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIP_XATTRS):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            continue


def _copy_meta(st: os.stat_result, src: str, dst: str) -> None:
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _copy_entry(src: str, dst: str, st: os.stat_result, links: dict[tuple[int, int], str] | None) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if links is not None and st.st_nlink > 1 and key in links:
            os.link(links[key], dst)
            return
        shutil.copyfile(src, dst, follow_symlinks=False)
        if links is not None:
            links[key] = dst
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        os.mknod(dst, mode, st.st_rdev)
    else:
        return  # sockets
    _copy_meta(st, src, dst)


def apply_lower(layer: str, dest: str, *, keep_links: bool = True) -> None:
    """Apply one overlay-format layer dir onto ``dest`` (copying, never linking into the layer).

    ``keep_links=False`` copies each path of a hardlink group separately: a step's writes then behave as
    under overlayfs, whose copy-up breaks a lower file's links (``chmod`` of one path changes that path
    only, and a link made to a lower file leaves that file unchanged)."""
    links: dict[tuple[int, int], str] | None = {} if keep_links else None
    dirs: list[tuple[os.stat_result, str, str]] = []

    def walk(rel: str) -> None:
        src_dir = os.path.join(layer, rel)
        dst_dir = os.path.join(dest, rel)
        if rel and _is_opaque(src_dir):
            for name in os.listdir(dst_dir):
                _remove(os.path.join(dst_dir, name))
        with os.scandir(src_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            src = entry.path
            dst = os.path.join(dst_dir, entry.name)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                _remove(dst)
            elif stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(dst) or os.path.islink(dst):
                    _remove(dst)
                    os.mkdir(dst)
                walk(os.path.join(rel, entry.name))
                dirs.append((st, src, dst))
            else:
                _remove(dst)
                _copy_entry(src, dst, st, links)

    walk("")
    for st, src, dst in dirs:  # appended children first, so parents' mtimes are set last
        _copy_meta(st, src, dst)


def scan(root: str) -> dict[str, os.stat_result]:
    """Every entry under ``root`` (pre-order, sorted) with its lstat."""
    found: dict[str, os.stat_result] = {}

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(root, rel)) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            path = os.path.join(rel, entry.name) if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            found[path] = st
            if stat.S_ISDIR(st.st_mode):
                walk(path)

    walk("")
    return found


_FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode generation (ext4, xfs, btrfs, tmpfs)


def generations(root: str, entries: dict[str, os.stat_result]) -> dict[str, int]:
    """Inode generations of the directories: tells a re-created directory that reused its inode number
    from the original, so it can be marked opaque as overlayfs would."""
    found: dict[str, int] = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            found[rel] = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETVERSION, b"\0" * 8))[0]
        except OSError:
            pass  # no generations on this filesystem: inode numbers alone decide
        finally:
            os.close(fd)
    return found


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_mode, a.st_uid, a.st_gid, a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_rdev) == (
        b.st_ino,
        b.st_mode,
        b.st_uid,
        b.st_gid,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_rdev,
    )


def _mark_opaque(path: str) -> bool:
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y", follow_symlinks=False)
    except OSError:
        return False  # unprivileged: whiteouts for the vanished children say the same
    return True


def write_diff(
    rootfs: str, before: dict[str, os.stat_result], upper: str, before_generations: dict[str, int] | None = None
) -> None:
    """Write what changed in ``rootfs`` since ``before`` into ``upper`` in overlay format.

    Like overlayfs, a directory created where something else was is opaque. Changed non-directories
    are moved, not copied (``rootfs`` is thrown away afterwards), so this is cheap."""
    after = scan(rootfs)
    old_gens = before_generations or {}
    new_gens = generations(rootfs, {r: st for r, st in after.items() if r in old_gens})
    made: dict[str, os.stat_result] = {}  # dirs created in upper -> the metadata they must end with
    opaque: set[str] = set()
    links: dict[tuple[int, int], str] = {}

    def ensure_parents(rel: str) -> None:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in made:
                os.mkdir(os.path.join(upper, parent))
                made[parent] = after[parent]

    for rel, st in after.items():
        old = before.get(rel)
        if old is not None and _same(old, st):
            continue
        ensure_parents(rel)
        dst = os.path.join(upper, rel)
        if stat.S_ISDIR(st.st_mode):
            if rel not in made:
                os.mkdir(dst)
                made[rel] = st
            replaced = old is not None and (
                old.st_ino != st.st_ino or old_gens.get(rel, 0) != new_gens.get(rel, old_gens.get(rel, 0))
            )
            if replaced and _mark_opaque(dst):
                opaque.add(rel)
            continue
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and key in links:
            os.link(links[key], dst)
            continue
        os.rename(os.path.join(rootfs, rel), dst)
        links[key] = dst
    for rel in before:
        if rel in after:
            continue
        parent = rel.rpartition("/")[0]
        parent_now = after.get(parent) if parent else None
        if parent and (parent_now is None or not stat.S_ISDIR(parent_now.st_mode)):
            continue  # a deleted or replaced ancestor already hides it
        if any(rel.startswith(d + "/") for d in opaque):
            continue
        ensure_parents(rel)
        os.mknod(os.path.join(upper, rel), stat.S_IFCHR, os.makedev(0, 0))
        os.utime(os.path.join(upper, rel), ns=(before[rel].st_atime_ns, before[rel].st_mtime_ns))
    for rel in sorted(made, key=lambda r: -r.count("/")):
        _copy_meta(made[rel], os.path.join(rootfs, rel), os.path.join(upper, rel))


def _make_mountpoints(rootfs: Path, mountpoints: Sequence[tuple[str, bool]]) -> None:
    """Create missing runtime mountpoints before the baseline, restoring the parents' times."""
    for rel, is_dir in mountpoints:
        path = rootfs / rel
        if os.path.lexists(path):
            continue
        parent = path.parent
        ancestors = [p for p in [parent, *parent.parents] if p.is_relative_to(rootfs)]
        if any(p.is_symlink() for p in ancestors):
            continue
        saved = {p: os.lstat(p) for p in ancestors if p.exists()}
        parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            path.mkdir(mode=0o755)
        else:
            path.touch(mode=0o644)
        for p, st in saved.items():
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


class _CopySnapshot:
    def __init__(self, root: Path, lowers: Sequence[Path], mountpoints: Sequence[tuple[str, bool]]) -> None:
        self.dir = root / "snapshots" / os.urandom(8).hex()
        self.rootfs = self.dir / "rootfs"
        self.upper = self.dir / "upper"
        self._lowers = list(lowers)
        self._mountpoints = tuple(mountpoints)
        self._before: dict[str, os.stat_result] = {}
        self._generations: dict[str, int] = {}

    def __enter__(self) -> _CopySnapshot:
        claim(self.dir)
        try:
            self.rootfs.mkdir()
            os.chmod(self.rootfs, 0o755)
            for layer in reversed(self._lowers):
                apply_lower(os.fspath(layer), os.fspath(self.rootfs), keep_links=False)
            _make_mountpoints(self.rootfs, self._mountpoints)
            self._before = scan(os.fspath(self.rootfs))
            self._generations = generations(os.fspath(self.rootfs), self._before)
        except BaseException:
            self.discard()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.upper.mkdir()
            os.chmod(self.upper, 0o755)
            write_diff(os.fspath(self.rootfs), self._before, os.fspath(self.upper), self._generations)
        except BaseException:
            self.discard()
            raise
        shutil.rmtree(self.rootfs, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class CopySnapshotter:
    """Copies lowers into a directory per step and diffs by walking; see module doc."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        (self.root / "snapshots").mkdir(parents=True, exist_ok=True)

    def prepare(
        self, lowers: Sequence[Path], *, mountpoints: Sequence[tuple[str, bool]] = RUN_MOUNTPOINTS
    ) -> _CopySnapshot:
        return _CopySnapshot(self.root, lowers, mountpoints)

    @contextlib.contextmanager
    def view(self, lowers: Sequence[Path]) -> Iterator[Path]:
        """A merged copy of ``lowers`` to read from (e.g. ``COPY --from``); removed afterwards."""
        directory = self.root / "snapshots" / os.urandom(8).hex()
        claim(directory)
        try:
            rootfs = directory / "rootfs"
            rootfs.mkdir(mode=0o755)
            for layer in reversed(lowers):
                apply_lower(os.fspath(layer), os.fspath(rootfs))
            yield rootfs
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def detect_snapshotter(root: str | os.PathLike[str]) -> Snapshotter:
    """An overlay snapshotter if a test mount under ``root`` works with options that keep upper dirs
    complete, else the copying one. It lives beside the fallback so that snapshot.py never imports this
    module: the worker's imports point one way."""
    base = Path(root)
    probe = base / "snapshots" / f".probe-{os.urandom(4).hex()}"
    try:
        (probe / "lower").mkdir(parents=True)
        (probe / "lower" / "x").write_bytes(b"")
        # Without redirect_dir=off a renamed lower directory would reach the layer as an empty redirect.
        for options in (OverlaySnapshotter(base).options, "index=off,redirect_dir=off", "redirect_dir=off"):
            snapshotter = OverlaySnapshotter(base, options=options)
            try:
                with snapshotter.prepare([probe / "lower"], mountpoints=()) as snap:
                    os.unlink(snap.rootfs / "x")
                ok = is_whiteout(os.lstat(snap.upper / "x"))
                snap.discard()
            except OSError:
                continue
            if ok:
                return snapshotter
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return CopySnapshotter(base)

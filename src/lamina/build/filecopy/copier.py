"""COPY and ADD into a mounted root filesystem, with BuildKit's semantics (fsutil ``copy.Copy``).

- A source directory copies its *contents*; a file keeps its base name when the destination is a
  directory (ends in '/', or already exists as one), else it becomes the destination path.
- Several sources (or a wildcard matching several) need a destination ending in '/'.
- Missing destination directories are created 0755 (an octal ``--chmod``'s mode instead, as BuildKit
  v0.32 does), owned by the ``--chown`` owner or root. ``--chmod`` may be symbolic (:mod:`.modes`).
- ``COPY --parents`` puts each match at DEST/<its path> (:mod:`.parents`).
- Copied files and directories keep their permission bits (``--chmod`` replaces them) and mtimes;
  symlinks stay symlinks; hard links inside one copy stay hard links. Owners are 0:0 for context files,
  kept for ``--from`` sources (as BuildKit does), and the ``--chown`` owner when given.
- A directory's metadata is applied after its children; an existing destination directory keeps its own
  (only directories that the copy re-creates or copies over take the source's).
- ADD: a local tar archive (any compression, detected by content) is unpacked into the destination,
  its entries keeping the archive's owners and modes (``--chown``/``--chmod`` apply to the created
  destination only, as in BuildKit), unless ``--unpack=false``; an http(s) URL is downloaded (mode 0600,
  Last-Modified mtime, ``--checksum`` verified) and unpacked only with ``--unpack=true`` (then, when it is
  an archive, into the destination directory); a git repository (:mod:`.git`) is checked out and its
  tree copied into the destination. Wildcards matching nothing are allowed (BuildKit's
  ``AllowEmptyWildcard``); a plain source that does not exist is an error naming it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.build import gopath
from lamina.build.context import ContextError, Entry, Selected, SourceTree
from lamina.build.dockerignore import PatternMatcher
from lamina.build.filecopy.checksum import checksum_of, exclude_of
from lamina.build.filecopy.fetch import Download, Downloads, is_url
from lamina.build.filecopy.git import parse_git_source
from lamina.build.filecopy.modes import Chmod, ChmodError
from lamina.build.filecopy.modes import parse_chmod as parse_modes
from lamina.build.filecopy.parents import copy_root, select_parents
from lamina.build.filecopy.rootfs import DIR_FLAGS, NEW_FILE_FLAGS, CopyError, RootFS, write_all
from lamina.build.ops import CopyStep

__all__ = ["OwnerResolver", "apply_copy", "parse_chmod"]

OwnerResolver = Callable[[str], tuple[int, int]]
_CHUNK = 1 << 20
_SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.")


def parse_chmod(value: str | None) -> Chmod | None:
    """``--chmod`` as BuildKit accepts it (octal, or symbolic such as ``u+x,g-w``); None when not given."""
    if value is None or value == "":
        return None
    try:
        return parse_modes(value)
    except ChmodError as exc:
        raise CopyError(str(exc)) from None


def _numeric_owner(spec: str) -> tuple[int, int]:
    user, _, group = spec.partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        raise CopyError(f"cannot resolve --chown={spec}: no user database to look names up in")
    return int(user), int(group or user)


def _instruction(step: CopyStep) -> str:
    return "ADD" if step.is_add else "COPY"


@dataclass(frozen=True, slots=True)
class _Inline:
    """A file that does not come from a tree: a heredoc or a download."""

    name: str
    path: Path | None
    data: bytes
    mode: int
    mtime_ns: int | None


_Item = Selected | _Inline


def apply_copy(
    step: CopyStep,
    *,
    source_root: Path | None,
    rootfs: Path,
    context_ignore: Sequence[str] | PatternMatcher | None = None,
    resolve_owner: OwnerResolver | None = None,
    downloads: Downloads | None = None,
    checksum: str | None = None,
    source: SourceTree | None = None,
) -> None:
    """Perform ``step`` into the mounted ``rootfs``.

    ``source_root`` is the build context (filtered by ``context_ignore``) or, for ``--from``, the source
    stage's/image's root filesystem; ``source`` may pass an already-open :class:`SourceTree` instead.
    ``resolve_owner`` maps a ``--chown`` spec to (uid, gid) in the destination rootfs (numeric specs work
    without it). ``downloads`` shares ADD URL downloads with :func:`copy_checksum`.
    """
    with contextlib.ExitStack() as stack:
        if downloads is None and any(is_url(s) or parse_git_source(s) for s in step.sources):
            downloads = stack.enter_context(Downloads())
        _Copier(step, source_root, rootfs, context_ignore, resolve_owner, downloads, checksum, source).run()


class _Copier:
    def __init__(
        self,
        step: CopyStep,
        source_root: Path | None,
        rootfs: Path,
        context_ignore: Sequence[str] | PatternMatcher | None,
        resolve_owner: OwnerResolver | None,
        downloads: Downloads | None,
        checksum: str | None,
        source: SourceTree | None,
    ) -> None:
        self.step = step
        self.instr = _instruction(step)
        self.from_other = step.from_stage is not None or step.from_image is not None
        self.root = RootFS(rootfs)
        self.source = source
        self.source_root = source_root
        self.ignore = context_ignore if context_ignore is not None and not self.from_other else ()
        self.resolve_owner = resolve_owner
        self.downloads = downloads
        self.checksum = checksum_of(step, checksum)
        self.exclude = exclude_of(step)
        self.chmod = parse_chmod(step.chmod)
        self.chown = self._resolve_chown(step.chown)
        self.links: dict[tuple[int, int], tuple[str, str]] = {}
        self.created: list[str] = []  # directories this copy created (root-relative), parents first
        self.copied_parents: list[tuple[str, Entry]] = []  # --parents: directories made after a source's

    # -- setup -----------------------------------------------------------------------------------

    def _resolve_chown(self, spec: str | None) -> tuple[int, int] | None:
        if not spec:
            return None
        if self.resolve_owner is None:
            return _numeric_owner(spec)
        try:
            return self.resolve_owner(spec)
        except (LookupError, ValueError, OSError) as exc:
            raise CopyError(f"{self.instr} --chown={spec}: {exc}") from None

    def _tree(self) -> SourceTree:
        if self.source is None:
            if self.source_root is None:
                raise CopyError(f"{self.instr} has sources but no source root")
            label = "build context" if not self.from_other else "source stage"
            if self.step.from_image is not None:
                label = f"image {self.step.from_image}"
            self.source = SourceTree(self.source_root, self.ignore or (), label=label)
        return self.source

    def _items(self) -> tuple[list[_Item], bool]:
        """Everything to copy, and whether several things are copied (which needs a directory dest)."""
        items: list[_Item] = []
        several = len(self.step.sources) + len(self.step.heredocs) > 1
        for src in self.step.sources:
            if is_url(src):
                if not self.step.is_add:
                    raise CopyError(f"COPY failed: source can't be a URL for COPY: {src}")
                assert self.downloads is not None
                got: Download = self.downloads.get(src, checksum=self.checksum)
                items.append(_Inline(got.filename, got.path, b"", 0o600, got.mtime_ns))
                continue
            git = parse_git_source(src) if self.step.is_add else None
            if git is not None:
                if len(self.step.sources) + len(self.step.heredocs) > 1:
                    raise CopyError(f"ADD {src}: a git repository must be the only source of its ADD")
                assert self.downloads is not None
                self.downloads.git.verified(git, self.checksum)  # ADD --checksum=<commit prefix>
                root = self.downloads.git.checkout(git, keep_git_dir=self.step.keep_git_dir)
                self.source = SourceTree(root, label=f"git repository {git.remote}")
                items.extend(self.source.select("."))  # the tree's contents go into the destination
                continue
            try:
                if self.step.parents:
                    selected = select_parents(self._tree(), src, self.exclude)
                else:
                    selected = self._tree().select(src, exclude=self.exclude)
            except ContextError as exc:
                raise CopyError(f"{self.instr} failed: {exc}") from None
            several = several or len(selected) > 1
            items.extend(selected)
        for name, content in self.step.heredocs:
            items.append(_Inline(name, None, content.encode(), 0o644, None))
        return items, several

    def _owner(self, entry: Entry | None) -> tuple[int, int]:
        if self.chown is not None:
            return self.chown
        if entry is not None and self.from_other:
            return entry.st.st_uid, entry.st.st_gid
        return 0, 0

    def _mode(self, src_mode: int) -> int:
        if self.chmod is None:
            return stat.S_IMODE(src_mode)
        return self.chmod.apply(src_mode, is_dir=stat.S_ISDIR(src_mode))

    # -- the copy --------------------------------------------------------------------------------

    def run(self) -> None:
        step = self.step
        dest = step.dest if step.dest.startswith("/") else posixpath.join(step.workdir or "/", step.dest)
        dir_syntax = dest.endswith(("/", "/.")) or dest in (".", "")
        items, several = self._items()
        if several and not dir_syntax:
            raise CopyError(
                f"When using {self.instr} with more than one source file, "
                "the destination must be a directory and end with a /"
            )
        head, tail = posixpath.split(dest)
        ensure = dest if tail in ("", ".") or self.step.parents else head
        self._mkdir_all(self.root.resolve(ensure))
        dest_rel = self.root.resolve(gopath.clean(dest))
        for item in items:
            if self.step.parents and isinstance(item, Selected):
                self._copy_with_parents(item, dest_rel)
            else:
                self._copy_item(item, dest_rel)
        for rel, entry in reversed(self.copied_parents):  # --parents: the source's directories, deepest first
            with self.root.dir(rel) as fd:
                self._meta(fd, entry)
        if self.chmod is not None and self.chmod.octal is not None:
            for rel in reversed(self.created):  # fsutil: created directories take an octal --chmod, deepest first
                self.root.chmod_dir(rel, self.chmod.octal)

    def _mkdir_all(self, rel: str) -> None:
        """``mkdir -p`` inside the rootfs; created dirs are 0755 (an octal --chmod replaces it at the end)
        and owned by the --chown owner or root, as BuildKit's copy creates them."""
        owner = self.chown if self.chown is not None else (0, 0)
        self.created.extend(self.root.mkdir_all(rel, owner=owner))

    def _copy_with_parents(self, item: Selected, dest_rel: str) -> None:
        """``COPY --parents``: the item lands at DEST/<its path below the copy root> (:mod:`.parents`); the
        directories above it that DEST lacks are copied from the source's (mode, owner, ``--chmod``)."""
        tree = self._tree()
        root = copy_root(tree, item.source)
        parts = item.rel.split("/") if item.rel else []
        where = dest_rel
        for depth, part in enumerate(parts[:-1]):
            source_dir = tree.lookup("/".join(p for p in (root.path, *parts[: depth + 1]) if p))
            with self.root.dir(where) as dfd:
                if self.root.clear_for(dfd, part, is_dir=True, where=self.root.display(f"{where}/{part}")) is None:
                    os.mkdir(part, 0o755, dir_fd=dfd)
                    if source_dir is not None:  # its metadata once its children are in (see run)
                        self.copied_parents.append((posixpath.join(where, part) if where else part, source_dir))
            where = posixpath.join(where, part) if where else part
        if item.entry.is_dir:
            target = posixpath.join(where, parts[-1]) if parts else where
            self._mkdir_all(target)
            self._copy_tree(item, target)
        else:
            self._copy_item(item, where)

    def _copy_item(self, item: _Item, dest_rel: str) -> None:
        src_is_dir = isinstance(item, Selected) and item.entry.is_dir
        st_dest = self.root.lstat(dest_rel)
        dest_is_dir = st_dest is not None and stat.S_ISDIR(st_dest.st_mode)
        if self._unpack(item, dest_rel):
            return
        if src_is_dir:
            assert isinstance(item, Selected)
            if st_dest is not None and not dest_is_dir:
                raise CopyError(f"cannot copy to non-directory: {self.root.display(dest_rel)}")
            self._mkdir_all(dest_rel)
            self._copy_tree(item, dest_rel)
            return
        target = posixpath.join(dest_rel, item.name) if dest_is_dir else dest_rel
        parent, _, name = target.rpartition("/")
        self._mkdir_all(parent)
        with self.root.dir(parent) as dfd:
            if isinstance(item, Selected):
                self._copy_entry(item.entry, dfd, parent, name)
            else:
                self._write_inline(item, dfd, name, self.root.display(target))

    def _unpack(self, item: _Item, dest_rel: str) -> bool:
        """ADD: unpack ``item`` into the directory ``dest_rel`` if it is a tar archive — a context file unless
        ``--unpack=false``, a download only with ``--unpack=true`` (BuildKit's defaults) — and say whether it was."""
        if not self.step.is_add or self.step.unpack is False:
            return False
        if isinstance(item, Selected):
            if not item.entry.is_file:
                return False
            fd, what = self._tree().open_file(item.entry), item.source
        elif item.path is not None and self.step.unpack:
            fd, what = os.open(item.path, os.O_RDONLY | os.O_CLOEXEC), item.name
        else:
            return False
        from lamina.build.filecopy.archive import extract_archive, is_archive  # tar + codecs: only ADD needs them

        with open(fd, "rb") as raw:
            if not is_archive(raw):
                return False
            self._mkdir_all(dest_rel)
            extract_archive(raw, RootFS(self.root.root / dest_rel if dest_rel else self.root.root), what=what)
        return True

    def _copy_tree(self, item: Selected, dest_rel: str) -> None:
        """Copy the contents of a source directory into the (existing) directory ``dest_rel``.

        One pre-order walk with a stack of open (destination, source) directory fds, so each entry costs
        its own syscalls only; a directory this copy created is known empty, so its children skip the
        "what is already there" check.
        """
        tree = self._tree()
        dest_fd = self.root.open_dir(dest_rel)
        try:
            src_fd = tree.open_dir(item.entry.path)
        except BaseException:
            os.close(dest_fd)
            raise
        stack: list[tuple[str, int, int, bool]] = [("", dest_fd, src_fd, False)]
        dirs: list[tuple[str, Entry]] = []
        try:
            for rel, entry in tree.walk(item.entry, self.exclude):
                parent = rel.rpartition("/")[0]
                while stack[-1][0] != parent:
                    _close(stack.pop())
                _, dfd, sfd, fresh = stack[-1]
                drel = posixpath.join(dest_rel, parent) if parent else dest_rel
                created = self._copy_entry(entry, dfd, drel, entry.name, src_dir_fd=sfd, fresh=fresh)
                if entry.is_dir:
                    child_dfd = os.open(entry.name, DIR_FLAGS, dir_fd=dfd)
                    try:
                        child_sfd = os.open(entry.name, DIR_FLAGS, dir_fd=sfd)
                    except OSError:
                        os.close(child_dfd)
                        raise
                    stack.append((rel, child_dfd, child_sfd, created))
                    dirs.append((rel, entry))
        finally:
            for frame in stack:
                _close(frame)
        for rel, entry in reversed(dirs):  # metadata after children, deepest first
            with self.root.dir(posixpath.join(dest_rel, rel)) as fd:
                self._meta(fd, entry)

    def _copy_entry(
        self, entry: Entry, dfd: int, drel: str, name: str, *, src_dir_fd: int | None = None, fresh: bool = False
    ) -> bool:
        """Create ``name`` in directory ``dfd`` as a copy of ``entry``; for a directory only the directory
        itself (its children and metadata are the caller's), returning whether it was created."""
        where = self.root.display(posixpath.join(drel, name))
        tree = self._tree()
        if entry.is_dir:
            existing = None if fresh else self.root.clear_for(dfd, name, is_dir=True, where=where)
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            return existing is None
        if not fresh:
            self.root.clear_for(dfd, name, is_dir=False, where=where)
        if entry.is_symlink:
            os.symlink(entry.link or "", name, dir_fd=dfd)
            owner = self._owner(entry)
            self.root.chown(dfd, name, *owner)
            mtime = entry.st.st_mtime_ns
            os.utime(name, ns=(mtime, mtime), dir_fd=dfd, follow_symlinks=False)
            return False
        if not entry.is_file:
            if stat.S_ISSOCK(entry.st.st_mode):
                return False  # sockets are not content
            if stat.S_ISFIFO(entry.st.st_mode):
                os.mkfifo(name, 0o600, dir_fd=dfd)
                self.root.chown(dfd, name, *self._owner(entry))
                os.chmod(name, self._mode(entry.st.st_mode), dir_fd=dfd)
                return False
            raise CopyError(f"cannot copy {entry.path}: device files cannot be copied")
        key = (entry.st.st_dev, entry.st.st_ino)
        if entry.st.st_nlink > 1 and key in self.links:
            first_dir, first_name = self.links[key]
            with self.root.dir(first_dir) as sfd:
                os.link(first_name, name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            return False
        sfd = tree.open_file(entry, src_dir_fd)
        try:
            fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dfd)
            try:
                _copy_data(sfd, fd)
                self._meta(fd, entry)
                if self.from_other:
                    _copy_xattrs(sfd, fd)
            finally:
                os.close(fd)
        finally:
            os.close(sfd)
        if entry.st.st_nlink > 1:
            self.links[key] = (drel, name)
        return False

    def _meta(self, fd: int, entry: Entry) -> None:
        """Owner, then mode (chown clears set-id bits), then mtime, on an open file or directory."""
        self.root.fchown(fd, *self._owner(entry))
        os.fchmod(fd, self._mode(entry.st.st_mode))
        mtime = entry.st.st_mtime_ns
        os.utime(fd, ns=(mtime, mtime))

    def _write_inline(self, item: _Inline, dfd: int, name: str, where: str) -> None:
        self.root.clear_for(dfd, name, is_dir=False, where=where)
        fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dfd)
        try:
            if item.path is not None:
                with open(item.path, "rb") as src:
                    _copy_data(src.fileno(), fd)
            else:
                write_all(fd, item.data)
            self.root.fchown(fd, *self._owner(None))
            os.fchmod(fd, self._mode(item.mode))
            if item.mtime_ns is not None:
                os.utime(fd, ns=(item.mtime_ns, item.mtime_ns))
        finally:
            os.close(fd)


def _close(frame: tuple[str, int, int, bool]) -> None:
    os.close(frame[1])
    os.close(frame[2])


def _copy_data(src: int, dst: int) -> None:
    """Copy all of ``src`` to ``dst``: copy_file_range when the kernel can, read/write otherwise."""
    try:
        while os.copy_file_range(src, dst, _CHUNK * 64):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
            raise
    while chunk := os.read(src, _CHUNK):
        write_all(dst, chunk)


def _copy_xattrs(src: int, dst: int) -> None:
    """Carry extended attributes (file capabilities, ...) from a stage's file, best effort as BuildKit."""
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIPPED_XATTRS):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name))

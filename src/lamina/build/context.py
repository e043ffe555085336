"""The files a COPY/ADD reads: a build context (after ``.dockerignore``) or a stage's root filesystem.

:class:`SourceTree` is the tree BuildKit would see after transferring the context: excluded entries do
not exist, an excluded directory exists only if something inside it is re-included, and symlinks are
resolved inside the root (an absolute target or ``..`` never leaves it, as containerd's ``fs.RootPath``).
Listings are read lazily, once per directory, through ``O_NOFOLLOW`` directory descriptors, so a COPY of
``src/`` never walks ``node_modules/`` and a hostile stage cannot point a read outside its rootfs.

Sources are selected as BuildKit's file op does (fsutil ``copy.ResolveWildcards``): the source is cleaned
under ``/`` (so ``../x`` is ``x``), split at the first component with a wildcard, and the rest is matched
with Go's ``filepath.Match`` (no ``**``: it is two ``*``); a matched directory is not descended. A
wildcard that matches nothing selects nothing (BuildKit's ``AllowEmptyWildcard``); a plain source must
exist.

:meth:`SourceTree.checksum` is the content checksum for the cache key: names relative to each source,
permission bits, file contents and symlink targets, in sorted order — never owners, mtimes or anything
outside the selected files. File digests are cached per process by (path, device, inode, size, mtime,
ctime), which can only skip re-reading a file that did not change.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.build import gopath
from lamina.build.confined import Missing, SymlinkLoop, resolve_confined
from lamina.build.dockerignore import MatchInfo, PatternMatcher, load_ignore_patterns

__all__ = [
    "BuildContext",
    "ContextError",
    "Entry",
    "Selected",
    "SourceNotFound",
    "SourceTree",
    "file_digest",
    "split_wildcards",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ContextError(Exception):
    """A source cannot be read (symlink loop, unreadable directory, ...)."""


class SourceNotFound(ContextError):
    """A COPY/ADD source does not exist (or is excluded by .dockerignore)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the tree: root-relative '/'-separated ``path`` ("" is the root) and its lstat."""

    path: str
    st: os.stat_result
    link: str | None = None  # symlink target, as stored

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


@dataclass(frozen=True, slots=True)
class Selected:
    """One thing a source selected: ``entry`` (symlinks followed if asked), named ``name`` in the copy."""

    source: str  # the source as written
    name: str  # the base name it lands under when copied into a directory
    rel: str  # the match path relative to the source's non-wildcard prefix ("" for a plain source)
    entry: Entry


def split_wildcards(path: str) -> tuple[str, str]:
    """fsutil ``splitWildcards``: (the cleaned prefix without wildcards, the rest from the first wildcard)."""
    parts = gopath.clean(path).split("/")
    head: list[str] = []
    tail: list[str] = []
    found = False
    for part in parts:
        if not found and gopath.contains_wildcards(part):
            found = True
        (tail if found else head).append(part or "/")
    prefix = gopath.clean("/".join(head)) if head else ""
    return prefix, "/".join(tail)


_digest_cache: dict[tuple[str, int, int, int, int, int], str] = {}
_digest_lock = threading.Lock()


def file_digest(fd: int) -> str:
    """sha256 hex of the file open at ``fd`` (read in chunks from the current offset)."""
    h = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


class SourceTree:
    """A root directory as COPY sees it, optionally filtered by .dockerignore patterns."""

    def __init__(
        self, root: Path | str, ignore: Sequence[str] | PatternMatcher = (), *, label: str = "build context"
    ) -> None:
        self.root = Path(root)
        self.label = label
        self.matcher = ignore if isinstance(ignore, PatternMatcher) else PatternMatcher(ignore)
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise ContextError(f"{label} {self.root}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ContextError(f"{label} {self.root} is not a directory")
        self._root = Entry("", st)
        self._root_str = str(self.root) + "/"
        self._filtered = bool(self.matcher)
        self._lists: dict[str, dict[str, Entry]] = {}
        self._infos: dict[str, MatchInfo] = {"": ()}
        self._lock = threading.RLock()

    @classmethod
    def load(cls, context_dir: Path | str, dockerfile: Path | None = None) -> SourceTree:
        """The build context at ``context_dir`` with its applicable .dockerignore.

        ``dockerfile`` is the Dockerfile's path, for ``<name>.dockerignore`` beside it (None: stdin).
        """
        context_dir = Path(context_dir)
        return cls(context_dir, load_ignore_patterns(context_dir, dockerfile))

    @classmethod
    def open(
        cls, context_dir: Path | str, *, dockerfile_name: str = "Dockerfile", dockerfile_dir: Path | None = None
    ) -> SourceTree:
        """:meth:`load` for callers that know the Dockerfile by name and directory (None: not on disk)."""
        dockerfile = None if dockerfile_dir is None else Path(dockerfile_dir) / Path(dockerfile_name).name
        return cls.load(context_dir, dockerfile)

    # -- reading ---------------------------------------------------------------------------------

    def open_dir(self, path: str) -> int:
        """An fd of directory ``path`` (a resolved path), opened component by component with O_NOFOLLOW."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in path.split("/") if path else ():
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError as exc:
            os.close(fd)
            raise ContextError(f"cannot open {path or '/'} in {self.label}: {exc.strerror}") from None
        return fd

    def open_file(self, entry: Entry, dir_fd: int | None = None) -> int:
        """An O_NOFOLLOW read fd of a regular file entry (``dir_fd``: its open parent, if at hand)."""
        parent, _, name = entry.path.rpartition("/")
        own = dir_fd is None
        pfd = self.open_dir(parent) if dir_fd is None else dir_fd
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=pfd)
        except OSError as exc:
            raise ContextError(f"cannot read {entry.path} in {self.label}: {exc.strerror}") from None
        finally:
            if own:
                os.close(pfd)
        os.set_blocking(fd, True)
        return fd

    def listdir(self, path: str) -> dict[str, Entry]:
        """The entries of directory ``path`` that exist after .dockerignore, sorted by name."""
        with self._lock:
            cached = self._lists.get(path)
            if cached is not None:
                return cached
            parent_info = self._infos[path]
            fd = self.open_dir(path)
            try:
                with os.scandir(fd) as it:
                    raw = sorted(((d.name, d.stat(follow_symlinks=False)) for d in it), key=lambda x: x[0])
                out: dict[str, Entry] = {}
                for name, st in raw:
                    child = f"{path}/{name}" if path else name
                    link = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
                    entry = Entry(child, st, link)
                    if self._filtered:
                        excluded, info = self.matcher.matches(child, parent_info)
                        if stat.S_ISDIR(st.st_mode):
                            self._infos[child] = info
                        if excluded:
                            if not stat.S_ISDIR(st.st_mode) or self.matcher.can_skip_dir(child):
                                continue
                            try:
                                kept = bool(self.listdir(child))
                            except ContextError:
                                kept = False  # an unreadable excluded dir is just excluded (fsutil does the same)
                            if not kept:
                                continue
                    elif stat.S_ISDIR(st.st_mode):
                        self._infos[child] = ()
                    out[name] = entry
            except OSError as exc:
                raise ContextError(f"cannot list {path or '/'} in {self.label}: {exc.strerror}") from None
            finally:
                os.close(fd)
            self._lists[path] = out
            return out

    def lookup(self, path: str) -> Entry | None:
        """The entry at an already-resolved path (no symlink following), or None."""
        if path == "":
            return self._root
        parent, _, name = path.rpartition("/")
        parent_entry = self.lookup(parent)
        if parent_entry is None or not parent_entry.is_dir:
            return None
        return self.listdir(parent).get(name)

    def resolve(self, path: str, *, follow: bool = True) -> Entry | None:
        """Resolve ``path`` (relative to the root; absolute symlinks and ``..`` stay inside), or None."""

        def readlink(parts: Sequence[str]) -> str | None:
            *parent, name = parts
            parent_entry = self.lookup("/".join(parent))
            child = self.listdir("/".join(parent)).get(name) if parent_entry and parent_entry.is_dir else None
            if child is None:
                raise Missing
            return (child.link or "") if child.is_symlink else None

        try:
            parts, found = resolve_confined(path, readlink, follow_last=follow)
        except SymlinkLoop as exc:
            raise ContextError(f"{exc} in {self.label}") from None
        return self.lookup("/".join(parts)) if found else None

    def walk(self, top: Entry, exclude: PatternMatcher | None = None) -> Iterator[tuple[str, Entry]]:
        """(path relative to ``top``, entry) for everything below directory ``top``, parents first, sorted.

        ``exclude`` (COPY --exclude) drops matching paths, relative to ``top``, with .dockerignore rules.
        """
        yield from self._walk(top, "", exclude, ())

    def _walk(
        self, top: Entry, prefix: str, exclude: PatternMatcher | None, info: MatchInfo
    ) -> Iterator[tuple[str, Entry]]:
        for name, entry in self.listdir(top.path).items():
            rel = f"{prefix}/{name}" if prefix else name
            child_info: MatchInfo = ()
            if exclude:
                excluded, child_info = exclude.matches(rel, info)
                if excluded:
                    if not entry.is_dir or exclude.can_skip_dir(rel):
                        continue
                    inner = list(self._walk(entry, rel, exclude, child_info))
                    if inner:
                        yield rel, entry
                        yield from inner
                    continue
            yield rel, entry
            if entry.is_dir:
                yield from self._walk(entry, rel, exclude, child_info)

    # -- selecting sources -----------------------------------------------------------------------

    def _not_found(self, source: str) -> SourceNotFound:
        where = self.label
        if where == "build context":
            where += " or excluded by .dockerignore"
        return SourceNotFound(f"file not found in {where}: stat {source}: file does not exist")

    def select(
        self, source: str, *, follow_links: bool = True, exclude: PatternMatcher | None = None
    ) -> list[Selected]:
        """What ``source`` selects, in walk order; raises :class:`SourceNotFound` for a missing plain source.

        Wildcard matches that ``exclude`` (COPY --exclude) matches are dropped.
        """
        prefix, pattern = split_wildcards("/" + source)
        if not pattern:
            entry = self.resolve(prefix, follow=follow_links)
            if entry is None:
                raise self._not_found(source)
            return [Selected(source, prefix.rsplit("/", 1)[-1] or "/", "", entry)]
        base = self.resolve(prefix, follow=True)
        if base is None:
            raise self._not_found(source)
        if not base.is_dir:
            return []
        depth = pattern.count("/") + 1
        out: list[Selected] = []
        try:
            self._match_under(base, "", pattern, depth, follow_links, source, out)
        except gopath.BadPatternError:
            raise ContextError(f"invalid source pattern {source!r}: syntax error") from None
        if exclude:
            out = [item for item in out if not exclude.excluded(item.rel)]
        return out

    def _match_under(
        self, directory: Entry, rel: str, pattern: str, depth: int, follow: bool, source: str, out: list[Selected]
    ) -> None:
        for name, entry in self.listdir(directory.path).items():
            sub = f"{rel}/{name}" if rel else name
            if gopath.match(pattern, sub):
                target = entry
                if follow and entry.is_symlink:
                    resolved = self.resolve(entry.path, follow=True)
                    if resolved is None:
                        raise self._not_found(f"{source} ({sub})")
                    target = resolved
                out.append(Selected(source, name, sub, target))
            elif entry.is_dir and sub.count("/") + 1 < depth:
                self._match_under(entry, sub, pattern, depth, follow, source, out)

    # -- checksum --------------------------------------------------------------------------------

    def digest_of(self, entry: Entry, dir_fd: int | None = None) -> str:
        """sha256 hex of a regular file's content, cached per (path, dev, inode, size, mtime, ctime)."""
        st = entry.st
        key = (self._root_str + entry.path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _digest_lock:
            hit = _digest_cache.get(key)
        if hit is not None:
            return hit
        fd = self.open_file(entry, dir_fd)
        try:
            digest = file_digest(fd)
        finally:
            os.close(fd)
        with _digest_lock:
            _digest_cache[key] = digest
        return digest

    def _record(self, name: str, entry: Entry, owners: bool = False) -> bytes:
        perm = stat.S_IMODE(entry.st.st_mode)
        bname = os.fsencode(name)
        if owners:
            bname += b" %d:%d" % (entry.st.st_uid, entry.st.st_gid)
        if entry.is_file:
            return b"f %o %s %s\0" % (perm, bname, self.digest_of(entry).encode())
        if entry.is_dir:
            return b"d %o %s\0" % (perm, bname)
        if entry.is_symlink:
            return b"l %s %s\0" % (bname, os.fsencode(entry.link or ""))
        if stat.S_ISSOCK(entry.st.st_mode):
            return b""  # sockets are not copied, so they are not content
        return b"o %o %o %s\0" % (stat.S_IFMT(entry.st.st_mode), perm, bname)

    def checksum(
        self, sources: Sequence[str], *, follow_links: bool = True, exclude: Sequence[str] | PatternMatcher = (),
        owners: bool = False,
    ) -> str:
        """``sha256:<hex>`` over exactly what ``sources`` select (see the module docstring); ``owners`` adds
        each entry's uid:gid (a stage's files keep theirs when copied, so they are content there)."""
        matcher = exclude if isinstance(exclude, PatternMatcher) else PatternMatcher(exclude)
        h = hashlib.sha256()
        for source in sources:
            selected = self.select(source, follow_links=follow_links, exclude=matcher or None)
            h.update(b"source %d\0" % len(selected))
            for item in selected:
                h.update(b"select %s\0" % os.fsencode(item.rel))
                if item.entry.is_dir:
                    for rel, entry in self.walk(item.entry, matcher or None):
                        h.update(self._record(rel, entry, owners))
                else:
                    h.update(self._record("", item.entry, owners))
        return "sha256:" + h.hexdigest()


BuildContext = SourceTree

"""``ADD <git repository>``: BuildKit's git source, through the ``git`` binary.

Which sources are git repositories follows BuildKit's ``gitutil.ParseGitRef``: ``git://`` and ``ssh://``
URLs, scp-like ``user@host:path``, and ``http(s)://`` URLs whose path ends in ``.git``; the fragment
selects a ref and a subdirectory, ``#ref:subdir`` or the newer ``#ref=REF,subdir=DIR``. The ref (a branch,
a tag — peeled to its commit — or a full commit hash; the remote's HEAD when none is given) is resolved to a
commit with ``git ls-remote`` first: that commit is what the step's cache key holds (as BuildKit keys a git
source by the resolved commit), so a moved branch misses and an unchanged one never fetches. The checkout
is a shallow fetch of that commit, made once per build; without ``--keep-git-dir`` its ``.git`` is
removed. Files get git's modes (0644/0755, umask 022) and are owned by root (or ``--chown``) in the copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from lamina.build import gopath
from lamina.build.filecopy.rootfs import CopyError

__all__ = ["GitCheckouts", "GitSource", "parse_git_source"]

_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.+-]+@[A-Za-z0-9_.-]+:(?!//)")
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class GitSource:
    """A git ADD source: ``remote`` (the URL without its fragment), ``ref`` ("" = HEAD), ``subdir`` ("" = root)."""

    source: str
    remote: str
    ref: str
    subdir: str


def parse_git_source(source: str) -> GitSource | None:
    """``source`` as a git repository, or None when it is not one (see the module docstring)."""
    remote, _, fragment = source.partition("#")
    scheme = urllib.parse.urlsplit(remote).scheme.lower() if "://" in remote else ""
    if scheme in ("http", "https"):
        if not urllib.parse.urlsplit(remote).path.endswith(".git"):
            return None
    elif scheme not in ("git", "ssh") and not (not scheme and _SCP_LIKE.match(remote)):
        return None
    ref, subdir = _fragment(source, fragment)
    subdir = gopath.clean("/" + subdir).lstrip("/") if subdir else ""
    return GitSource(source, remote, ref, subdir)


def _fragment(source: str, fragment: str) -> tuple[str, str]:
    if "=" not in fragment:
        ref, _, subdir = fragment.partition(":")
        return ref, subdir
    values: dict[str, str] = {}
    for item in fragment.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in ("ref", "subdir"):
            raise CopyError(f"ADD {source}: unknown git fragment option {item!r} (known: ref=, subdir=)")
        values[key] = value
    return values.get("ref", ""), values.get("subdir", "")


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT, check=False,
            umask=0o022,
        )
    except FileNotFoundError:
        raise CopyError("ADD of a git repository needs the git binary: apt-get install git") from None
    except subprocess.TimeoutExpired:
        raise CopyError(f"git {args[0]} timed out after {_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise CopyError(f"git {args[0]} failed: {detail}")
    return proc.stdout


class GitCheckouts:
    """The git sources of one build: each ref resolved once, each commit checked out once (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._commits: dict[tuple[str, str], str] = {}
        self._trees: dict[tuple[str, str, bool], Path] = {}
        self._lock = threading.Lock()

    def resolve(self, git: GitSource) -> str:
        """The commit ``git.ref`` names at the remote now (a full commit hash is taken as it is)."""
        if _COMMIT.match(git.ref):
            return git.ref
        with self._lock:
            done = self._commits.get((git.remote, git.ref))
        if done is not None:
            return done
        try:
            patterns = [git.ref, git.ref + "^{}"] if git.ref else ["HEAD"]  # ^{}: an annotated tag's commit
            listing = _git("ls-remote", "--", git.remote, *patterns)
        except CopyError as exc:
            raise CopyError(f"ADD {git.source}: {exc}") from None
        commit = _pick(listing, git.ref)
        if commit is None:
            raise CopyError(f"ADD {git.source}: ref {git.ref or 'HEAD'!r} not found in {git.remote}")
        with self._lock:
            self._commits[(git.remote, git.ref)] = commit
        return commit

    def verified(self, git: GitSource, checksum: str | None) -> str:
        """:meth:`resolve`, and ``ADD --checksum`` checked as BuildKit checks a git source's: the commit must
        start with it (a full hash or a prefix)."""
        commit = self.resolve(git)
        if checksum is not None and not commit.startswith(checksum):
            raise CopyError(f"ADD {git.source}: --checksum={checksum} does not match commit {commit} "
                            f"(ref {git.ref or 'HEAD'})")
        return commit

    def checkout(self, git: GitSource, *, keep_git_dir: bool) -> Path:
        """The directory to copy from: the commit's tree (its ``subdir``), ``.git`` kept only if asked."""
        commit = self.resolve(git)
        key = (git.remote, commit, keep_git_dir)
        with self._lock:
            tree = self._trees.get(key)
        if tree is None:
            tree = self._fetch(git, commit, keep_git_dir)
            with self._lock:
                self._trees[key] = tree
        root = tree / git.subdir if git.subdir else tree
        if not root.is_dir() or root.is_symlink():
            raise CopyError(f"ADD {git.source}: no directory {git.subdir!r} in commit {commit[:12]}")
        return root

    def _fetch(self, git: GitSource, commit: str, keep_git_dir: bool) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        tree = Path(tempfile.mkdtemp(prefix="git-", dir=self.directory))
        try:
            _git("init", "-q", str(tree))
            wanted = commit if _COMMIT.match(git.ref) or not git.ref else git.ref
            try:
                _git("fetch", "-q", "--depth", "1", "--", git.remote, wanted, cwd=tree)
            except CopyError:  # a server that refuses a bare commit: fetch everything, then pick it
                _git("fetch", "-q", "--", git.remote, "+refs/heads/*:refs/remotes/origin/*", cwd=tree)
            _git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit, cwd=tree)
            got = _git("rev-parse", "HEAD", cwd=tree).strip()
            if got != commit:
                raise CopyError(f"checked out {got}, expected {commit}")
            if not keep_git_dir:
                shutil.rmtree(tree / ".git")
        except CopyError as exc:
            shutil.rmtree(tree, ignore_errors=True)
            raise CopyError(f"ADD {git.source}: {exc}") from None
        return tree


def _pick(listing: str, ref: str) -> str | None:
    """The commit of ``ref`` in ``git ls-remote`` output: a peeled tag (``^{}``) first, then a branch,
    a tag, any ref of that name."""
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    if not ref:
        return refs.get("HEAD")
    for name in (f"refs/tags/{ref}^{{}}", f"refs/heads/{ref}", f"refs/tags/{ref}", f"{ref}^{{}}", ref):
        if name in refs:
            return refs[name]
    return None

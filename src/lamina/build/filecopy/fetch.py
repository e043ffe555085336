"""ADD <url>: download once per build, hash while writing, verify ``--checksum`` before anything is used.

As BuildKit's HTTP source: the file is named by ``Content-Disposition``'s filename, else by the URL
path's last component (``download`` when there is none), gets mode 0600, and its mtime is the response's
``Last-Modified`` when present. The content digest is part of the step's cache key, which is why the
solver fetches before it looks the step up (BuildKit does the same).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from lamina.build.filecopy.git import GitCheckouts, parse_git_source
from lamina.build.filecopy.rootfs import CopyError, write_all
from lamina.oci import DigestError, parse_digest

__all__ = ["Download", "Downloads", "is_url"]

_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    """An http(s) source ADD downloads (one that names a git repository is cloned instead, see .git)."""
    return source.startswith(("http://", "https://")) and parse_git_source(source) is None


@dataclass(frozen=True, slots=True)
class Download:
    """One ``ADD <url>`` source fetched once per build: its bytes on disk, digest and file name."""

    url: str
    path: Path  # the downloaded bytes (owned by the Downloads that made it)
    digest: str  # "sha256:<hex>" of the content
    filename: str  # the name it gets when copied into a directory
    mtime_ns: int | None  # from Last-Modified


def _filename(url: str, disposition: str | None) -> str:
    if disposition:
        import email.message  # here: only an ADD <url> answer needs it, not every build's start-up

        msg = email.message.Message()
        msg["content-disposition"] = disposition
        name = msg.get_filename()
        if name and not name.endswith("/"):
            base = posixpath.basename(name)
            if base:
                return base
    base = posixpath.basename(urllib.parse.urlsplit(url).path)
    return urllib.parse.unquote(base) if base not in ("", ".", "/") else "download"


def _mtime(last_modified: str | None) -> int | None:
    if not last_modified:
        return None
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return None
    return int(when.timestamp()) * 1_000_000_000


class Downloads:
    """The URL files of one build, each fetched at most once (thread-safe)."""

    def __init__(self, directory: Path | None = None, *, timeout: float = 120.0) -> None:
        self._own = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="lamina-add-")) if directory is None else Path(directory)
        self.timeout = timeout
        self._done: dict[str, Download] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.git = GitCheckouts(self.directory / "git")  # ADD <git repository>: checkouts of this build

    def close(self) -> None:
        """Remove what this object downloaded (and checked out) into a directory it created."""
        if self._own:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Downloads:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def get(self, url: str, *, checksum: str | None = None) -> Download:
        """The downloaded ``url``; with ``checksum`` ("sha256:<hex>") the content must match it."""
        expected = None
        if checksum:
            try:
                expected = parse_digest(checksum)
            except DigestError as exc:
                raise CopyError(f"invalid --checksum for {url}: {exc}") from None
        with self._lock:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            done = self._done.get(url)
            if done is None:
                done = self._fetch(url)
                self._done[url] = done
        if expected is not None and str(expected) != done.digest and expected.algorithm == "sha256":
            raise CopyError(f"digest mismatch for {url}: expected {expected}, got {done.digest}")
        if expected is not None and expected.algorithm != "sha256":
            actual = hashlib.new(expected.algorithm, done.path.read_bytes()).hexdigest()
            if actual != expected.encoded:
                raise CopyError(f"digest mismatch for {url}: expected {expected}, got {expected.algorithm}:{actual}")
        return done

    def _fetch(self, url: str) -> Download:
        import urllib.error  # http.client and friends: only ADD <url> needs them
        import urllib.request

        request = urllib.request.Request(url, headers={"User-Agent": "lamina"})
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".part-")
        h = hashlib.sha256()
        try:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    disposition = response.headers.get("Content-Disposition")
                    last_modified = response.headers.get("Last-Modified")
                    while chunk := response.read(_CHUNK):
                        h.update(chunk)
                        write_all(fd, chunk)
            except urllib.error.HTTPError as exc:
                raise CopyError(f"failed to fetch {url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise CopyError(f"failed to fetch {url}: {reason}") from None
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        path = self.directory / h.hexdigest()
        os.replace(tmp, path)
        return Download(url, path, "sha256:" + h.hexdigest(), _filename(url, disposition), _mtime(last_modified))

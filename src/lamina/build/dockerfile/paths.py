"""Path rules for WORKDIR and COPY/ADD destinations (BuildKit's ``system.NormalizePath``, Linux).

A relative path is joined to the current working directory (and so cleaned); an absolute one is kept
as written. A destination keeps its trailing ``/`` (it means "into this directory").
"""

from __future__ import annotations

import posixpath

__all__ = ["normalize_dest", "normalize_workdir"]


def _normalize(parent: str, new: str, keep_slash: bool) -> str:
    original = new
    parent = parent or "/"
    if not posixpath.isabs(parent):
        parent = posixpath.normpath("/" + parent)
    if not new:
        new = parent
    if not posixpath.isabs(new):
        new = _join(parent, new)
    if keep_slash:
        if original.endswith("/") and not new.endswith("/"):
            new += "/"
        elif original.endswith("/."):
            new = (new if new == "/" else new + "/") + "."
    return new


def _join(parent: str, child: str) -> str:
    """Go's ``path.Join`` (cleans; ``normpath`` keeps a leading ``//`` that Go collapses)."""
    joined = posixpath.normpath(posixpath.join(parent, child))
    return "/" + joined.lstrip("/") if joined.startswith("//") else joined


def normalize_workdir(current: str, requested: str) -> str:
    """The new WORKDIR given the current one (BuildKit's NormalizeWorkdir)."""
    return _normalize(current, requested, keep_slash=False)


def normalize_dest(workdir: str, dest: str) -> str:
    """A COPY/ADD destination made absolute against WORKDIR (BuildKit's pathRelativeToWorkingDir)."""
    if posixpath.isabs(dest):
        return _normalize("/", dest, keep_slash=True)
    if dest in ("", "."):
        dest = "./"
    return _normalize(workdir, dest, keep_slash=True)

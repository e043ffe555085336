"""The content part of a COPY/ADD cache key: a checksum of exactly what the step reads.

BuildKit keys a copy by the content it reads (its ``contenthash`` of the selected paths), never by
mtimes: context sources contribute :meth:`lamina.build.context.SourceTree.checksum` (names, modes,
contents, symlink targets; owners too for a ``COPY --from=<stage>``, which keeps them); an ADD URL its
downloaded content digest and file name; an ADD git repository the commit its ref resolves to (its
subdirectory and ``--keep-git-dir``); a heredoc its name and content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat

from lamina.build.context import ContextError, SourceTree
from lamina.build.dockerignore import PatternMatcher
from lamina.build.filecopy.fetch import Downloads, is_url
from lamina.build.filecopy.git import parse_git_source
from lamina.build.filecopy.parents import copy_root, select_parents
from lamina.build.filecopy.rootfs import CopyError
from lamina.build.ops import CopyStep

__all__ = ["checksum_of", "copy_checksum", "exclude_of"]


def exclude_of(step: CopyStep) -> PatternMatcher | None:
    """``--exclude`` patterns as a matcher (dockerignore rules, relative to each source), or None."""
    return PatternMatcher(step.exclude) if step.exclude else None


def checksum_of(step: CopyStep, checksum: str | None) -> str | None:
    """The expected ADD URL digest: the caller's override, else ``--checksum``."""
    return checksum if checksum is not None else step.checksum


def copy_checksum(
    step: CopyStep,
    context: SourceTree,
    *,
    downloads: Downloads | None = None,
    checksum: str | None = None,
    owners: bool = False,
) -> str:
    """``sha256:<hex>`` over what ``step`` reads from ``context`` (see the module docstring); ``owners``
    adds each entry's uid and gid (for a stage's files, which the copy keeps)."""
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        if downloads is None and any(is_url(s) or parse_git_source(s) for s in step.sources):
            downloads = stack.enter_context(Downloads())  # not shared: fetched again by apply_copy
        _hash_sources(step, context, downloads, checksum_of(step, checksum), exclude_of(step), h, owners)
    for name, content in step.heredocs:
        h.update(b"heredoc %s %s\0" % (os.fsencode(name), hashlib.sha256(content.encode()).hexdigest().encode()))
    return "sha256:" + h.hexdigest()


def _hash_sources(
    step: CopyStep,
    context: SourceTree,
    downloads: Downloads | None,
    checksum: str | None,
    exclude: PatternMatcher | None,
    h: hashlib._Hash,
    owners: bool,
) -> None:
    instruction = "ADD" if step.is_add else "COPY"
    try:
        for source in step.sources:
            git = parse_git_source(source) if step.is_add else None
            if git is not None:  # keyed by the commit the ref resolves to, as BuildKit keys a git source
                assert downloads is not None
                commit = downloads.git.verified(git, checksum)  # ADD --checksum=<commit or a prefix>
                h.update(b"git %s %s %s %d\0" % (git.remote.encode(), commit.encode(), git.subdir.encode(),
                                                 step.keep_git_dir))
            elif is_url(source):
                if not step.is_add:
                    raise CopyError(f"COPY failed: source can't be a URL for COPY: {source}")
                assert downloads is not None
                got = downloads.get(source, checksum=checksum)
                h.update(b"url %s %s\0" % (os.fsencode(got.filename), got.digest.encode()))
            elif step.parents:
                _hash_parents(context, source, exclude, owners, h)
            else:
                digest = context.checksum([source], exclude=exclude or (), owners=owners)
                h.update(b"path %s\0" % digest.encode())
    except CopyError:
        raise
    except ContextError as exc:
        raise CopyError(f"{instruction} failed: {exc}") from None


def _hash_parents(
    context: SourceTree, source: str, exclude: PatternMatcher | None, owners: bool, h: hashlib._Hash
) -> None:
    """``COPY --parents``: each match's path below the copy root, its content, and the modes of the
    directories above it (which the copy reproduces)."""
    root = copy_root(context, source)
    items = select_parents(context, source, exclude)
    h.update(b"parents %d\0" % len(items))
    for item in items:
        parts = item.rel.split("/")[:-1]
        for depth in range(len(parts)):
            above = context.lookup("/".join(p for p in (root.path, *parts[: depth + 1]) if p))
            if above is not None:
                owner = b" %d:%d" % (above.st.st_uid, above.st.st_gid) if owners else b""
                h.update(b"above %s %o%s\0" % (os.fsencode("/".join(parts[: depth + 1])),
                                                stat.S_IMODE(above.st.st_mode), owner))
        matched = context.checksum(["/" + item.entry.path], exclude=exclude or (), owners=owners)
        h.update(b"match %s %s\0" % (os.fsencode(item.rel), matched.encode()))

"""``COPY --parents``: which source paths a source selects and where they land, as BuildKit's frontend
turns it into a copy with include patterns.

BuildKit cuts the source at its first ``/./``: the part before is the directory copied from (the context
root when there is no pivot), the part after an include pattern (moby's patternmatcher: ``*``, ``?``,
``[...]`` per path component and ``**`` across them; a matched directory brings everything below it).
Each match keeps its path below that directory — ``COPY --parents src/*/x.txt /dst/`` gives
``/dst/src/a/x.txt``, ``COPY --parents ./src/./b /dst/`` gives ``/dst/b/...`` — and the directories above
it are copied from the source's (their modes, owners as the copy sets them, ``--chmod``), not made 0755.
"""

from __future__ import annotations

from lamina.build import gopath
from lamina.build.context import Entry, Selected, SourceNotFound, SourceTree, split_wildcards
from lamina.build.dockerignore import MatchInfo, PatternMatcher

__all__ = ["copy_root", "select_parents"]


def _split(source: str) -> tuple[str, str]:
    """(the directory copied from, the include pattern), both cleaned and root-relative."""
    root, pivot, pattern = source.partition("/./")
    if not pivot:
        root, pattern = "", source
    return gopath.clean("/" + root).lstrip("/"), gopath.clean("/" + pattern).lstrip("/")


def copy_root(tree: SourceTree, source: str) -> Entry:
    """The directory ``source`` copies from (its part before ``/./``), symlinks resolved in the tree."""
    root, _ = _split(source)
    entry = tree.resolve("/" + root)
    if entry is None or not entry.is_dir:
        raise SourceNotFound(f"file not found in {tree.label}: stat {root or '/'}: not a directory")
    return entry


def _below(root: Entry, entry: Entry) -> str:
    return entry.path[len(root.path) + 1:] if root.path else entry.path


def select_parents(tree: SourceTree, source: str, exclude: PatternMatcher | None = None) -> list[Selected]:
    """What ``COPY --parents source`` copies: each match with ``rel`` = its path below the copy root."""
    root = copy_root(tree, source)
    _, pattern = _split(source)
    prefix, wildcard = split_wildcards("/" + pattern) if pattern else ("", "")
    if not wildcard:  # a plain path: that entry, which must exist
        entry = tree.resolve("/" + "/".join(p for p in (root.path, pattern) if p))
        if entry is None:
            raise SourceNotFound(f"file not found in {tree.label}: stat {source}: file does not exist")
        return [Selected(source, entry.name if pattern else "/", pattern, entry)]
    start = tree.resolve("/" + "/".join(p for p in (root.path, prefix.lstrip("/")) if p))
    if start is None or not start.is_dir:
        return []  # a wildcard that matches nothing selects nothing (BuildKit's AllowEmptyWildcard)
    matcher = PatternMatcher([pattern])
    out: list[Selected] = []
    _walk(tree, root, start, matcher, exclude, (), source, out)
    return out


def _walk(
    tree: SourceTree, root: Entry, directory: Entry, matcher: PatternMatcher, exclude: PatternMatcher | None,
    info: MatchInfo, source: str, out: list[Selected],
) -> None:
    for entry in tree.listdir(directory.path).values():
        rel = _below(root, entry)
        if exclude is not None and exclude.excluded(rel):
            continue
        matched, child_info = matcher.matches(rel, info)
        if matched:
            target = tree.resolve(entry.path, follow=True) if entry.is_symlink else entry
            if target is None:
                raise SourceNotFound(f"file not found in {tree.label}: {source} ({rel}): dangling symlink")
            out.append(Selected(source, entry.name, rel, target))
        elif entry.is_dir:
            _walk(tree, root, entry, matcher, exclude, child_info, source, out)

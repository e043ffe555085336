"""``.dockerignore``: reading the file and Docker's pattern matcher, rule for rule.

Reading follows moby/patternmatcher ``ignorefile.ReadAll`` (comments only in column 1, whitespace trimmed,
``filepath.Clean``, a leading ``/`` dropped, ``!`` exceptions). Matching follows
``patternmatcher.MatchesUsingParentResults`` as BuildKit's context walker (tonistiigi/fsutil ``filter.go``)
calls it: patterns are tried in order and the last one that matches decides; a pattern that matched a
directory counts as matching everything inside it; ``**`` spans any number of directories. An excluded
directory is skipped whole unless an exception could match something inside it
(:meth:`PatternMatcher.can_skip_dir`); otherwise it is walked, and kept only if something in it is kept.

The Dockerfile-specific ``<Dockerfile>.dockerignore`` next to the Dockerfile takes precedence over
``<context>/.dockerignore`` (Docker's "Dockerfile.dockerignore" rule).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lamina.build import gopath

__all__ = [
    "DockerignoreError",
    "MatchInfo",
    "Pattern",
    "PatternMatcher",
    "find_ignore_file",
    "load_ignore_patterns",
    "read_patterns",
]

MatchInfo = tuple[bool, ...]  # per pattern: did it match this directory (so it matches everything inside)

_ESCAPE = set(".+()|{}$")
_PATTERN_CHARS = set("*[]?^\\")


class DockerignoreError(ValueError):
    """A .dockerignore pattern is malformed."""


class _Kind(Enum):
    EXACT = 1
    PREFIX = 2
    SUFFIX = 3
    REGEXP = 4


@dataclass(frozen=True, slots=True)
class Pattern:
    """One cleaned pattern; ``exclusion`` marks a ``!`` exception (it re-includes what it matches)."""

    text: str
    exclusion: bool
    kind: _Kind
    regexp: re.Pattern[str] | None

    def matches(self, path: str) -> bool:
        if self.kind is _Kind.EXACT:
            return path == self.text
        if self.kind is _Kind.PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind is _Kind.SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regexp is not None
        return self.regexp.fullmatch(path) is not None

    def without_trailing_glob(self) -> str:
        text = self.text
        for tail in ("/**", "/*"):
            if text.endswith(tail):
                text = text[: -len(tail)]
        return text


def _compile(text: str, exclusion: bool) -> Pattern:
    """patternmatcher's ``Pattern.compile``: classify the pattern, and build a regexp when it needs one."""
    regex = "^"
    kind = _Kind.EXACT
    i = 0  # characters consumed by the outer loop, as Go's scanner loop counts them
    pos = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        pos += 1
        if ch == "*":
            if pos < n and text[pos] == "*":
                pos += 1
                if pos < n and text[pos] == "/":
                    pos += 1
                if pos >= n:
                    if kind is _Kind.EXACT:
                        kind = _Kind.PREFIX
                    else:
                        regex += ".*"
                        kind = _Kind.REGEXP
                else:
                    regex += "(.*/)?"
                    kind = _Kind.REGEXP
                if i == 0:
                    kind = _Kind.SUFFIX
            else:
                regex += "[^/]*"
                kind = _Kind.REGEXP
        elif ch == "?":
            regex += "[^/]"
            kind = _Kind.REGEXP
        elif ch in _ESCAPE:
            regex += "\\" + ch
        elif ch == "\\":
            if pos < n:
                regex += "\\" + text[pos]
                pos += 1
                kind = _Kind.REGEXP
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = _Kind.REGEXP
        else:
            regex += ch
        i += 1
    compiled = None
    if kind is _Kind.REGEXP:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = re.compile(regex + "$")
        except re.error as exc:
            raise DockerignoreError(f"invalid .dockerignore pattern {text!r}: {exc}") from None
    return Pattern(text, exclusion, kind, compiled)


class PatternMatcher:
    """Docker's ordered include/exception matcher over context-relative, '/'-separated paths."""

    def __init__(self, patterns: Sequence[str]) -> None:
        compiled: list[Pattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = gopath.clean(p)
            exclusion = False
            if p.startswith("!"):
                if len(p) == 1:
                    raise DockerignoreError('illegal exclusion pattern: "!"')
                exclusion = True
                p = p[1:]
            try:
                gopath.validate(p)
            except gopath.BadPatternError:
                raise DockerignoreError(f"invalid .dockerignore pattern {raw.strip()!r}: syntax error") from None
            compiled.append(_compile(p, exclusion))
        self.patterns: tuple[Pattern, ...] = tuple(compiled)
        self.exclusions = any(p.exclusion for p in compiled)
        self._only_prefix_exceptions = not any(
            p.exclusion and _PATTERN_CHARS.intersection(p.without_trailing_glob()) for p in compiled
        )

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str, parent: MatchInfo = ()) -> tuple[bool, MatchInfo]:
        """Is ``path`` excluded, given its parent directory's :data:`MatchInfo` (``()`` = unknown)?

        ``MatchesUsingParentResults``: returns the verdict and this path's own MatchInfo, to be passed
        for its children.
        """
        matched = False
        info: list[bool] = []
        for index, pattern in enumerate(self.patterns):
            hit = bool(parent) and parent[index]
            if not hit:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                hit = pattern.matches(path)
                if not hit and not parent and "/" in path:
                    parts = path.split("/")[:-1]
                    hit = any(pattern.matches("/".join(parts[: k + 1])) for k in range(len(parts)))
            info.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def excluded(self, path: str) -> bool:
        """``MatchesOrParentMatches``: the verdict for ``path`` without any parent information."""
        return self.matches(path)[0]

    def can_skip_dir(self, path: str) -> bool:
        """May an excluded directory be skipped whole (no exception could re-include anything inside)?"""
        if not self._only_prefix_exceptions:
            return False
        if not self.exclusions:
            return True
        prefix = path + "/"
        return not any(p.exclusion and (p.without_trailing_glob() + "/").startswith(prefix) for p in self.patterns)


def read_patterns(data: bytes | str) -> list[str]:
    """``ignorefile.ReadAll``: the patterns of a .dockerignore file, in order."""
    text = data.decode("utf-8", errors="surrogateescape") if isinstance(data, bytes) else data
    text = text.removeprefix("\ufeff")
    patterns: list[str] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = gopath.clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def find_ignore_file(context_dir: Path, dockerfile: Path | None = None) -> Path | None:
    """The ignore file that applies: ``<Dockerfile>.dockerignore`` beside the Dockerfile, else the context's."""
    if dockerfile is not None:
        specific = dockerfile.parent / (dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    default = context_dir / ".dockerignore"
    return default if default.is_file() else None


def load_ignore_patterns(context_dir: Path, dockerfile: Path | None = None) -> list[str]:
    """The patterns of the applicable ignore file (empty if there is none)."""
    path = find_ignore_file(context_dir, dockerfile)
    if path is None:
        return []
    try:
        return read_patterns(path.read_bytes())
    except OSError as exc:
        raise DockerignoreError(f"cannot read {path}: {exc.strerror}") from None

"""Go's ``path/filepath`` Clean and Match (Unix flavour), bit for bit.

Docker resolves COPY sources with ``filepath.Match`` and cleans ``.dockerignore`` patterns with
``filepath.Clean``; matching the Go semantics exactly (``*`` never crosses ``/``, ``[^...]`` classes,
backslash escapes, ``ErrBadPattern`` for a malformed pattern even when the match fails early) is what
makes a Dockerfile select the same files here as under BuildKit.
"""

from __future__ import annotations

__all__ = ["BadPatternError", "clean", "contains_wildcards", "match", "validate"]


class BadPatternError(ValueError):
    """The pattern is malformed (Go's ``filepath.ErrBadPattern``)."""

    def __init__(self, pattern: str) -> None:
        super().__init__(f"syntax error in pattern: {pattern!r}")
        self.pattern = pattern


def clean(path: str) -> str:
    """``filepath.Clean``: the shortest equivalent path (no ``.``, no ``x/..``, no repeated or trailing ``/``)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    body = "/".join(out)
    if rooted:
        return "/" + body
    return body or "."


def contains_wildcards(name: str) -> bool:
    """True if ``name`` has an unescaped ``*``, ``?`` or ``[`` (fsutil's containsWildcards)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif ch == "[":
            in_range = True
        elif ch == "]":
            in_range = False
        elif ch == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str, whole: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise BadPatternError(whole)
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPatternError(whole)
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise BadPatternError(whole)
    return r, rest


def _match_chunk(chunk: str, s: str, whole: str) -> str | None:
    """Match ``chunk`` at the start of ``s``; the rest of ``s`` or None. Validates the whole chunk."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        head = chunk[0]
        if head == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk.startswith("^"):
                negated = True
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk.startswith("]") and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk, whole)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:], whole)
                if not failed and lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif head == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if head == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPatternError(whole)
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def match(pattern: str, name: str) -> bool:
    """``filepath.Match(pattern, name)``; raises :class:`BadPatternError` for a malformed pattern."""
    whole = pattern
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return "/" not in name
        rest = _match_chunk(chunk, name, whole)
        if rest is not None and (rest == "" or pattern):
            name = rest
            continue
        if star:
            found = False
            i = 0
            while i < len(name) and name[i] != "/":
                rest = _match_chunk(chunk, name[i + 1 :], whole)
                if rest is not None:
                    if not pattern and rest:
                        i += 1
                        continue
                    name = rest
                    found = True
                    break
                i += 1
            if found:
                continue
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "", whole)
        return False
    return name == ""


def validate(pattern: str) -> None:
    """Raise :class:`BadPatternError` if ``pattern`` is malformed (Go: ``filepath.Match(p, ".")``)."""
    match(pattern, ".")

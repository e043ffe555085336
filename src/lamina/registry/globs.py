"""Repository and tag globs used by access rules, immutable tags and lifecycle rules.

One grammar everywhere, so a pattern means the same thing in every section of the config:
``*`` matches within one path segment (no ``/``), ``**`` matches across segments, ``?`` matches one
character other than ``/``, everything else is literal. A pattern matches the whole name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = ["compile_glob", "matches_any"]


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The anchored regular expression for ``pattern``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches_any(patterns: Iterable[str], name: str) -> bool:
    return any(compile_glob(p).match(name) for p in patterns)

"""Repository and tag globs used by access rules, immutable tags and lifecycle rules.

One grammar everywhere (and one parser for the config's lists of them), so a pattern means the same
thing in every section of the config: ``*`` matches within one path segment (no ``/``), ``**``
matches across segments, ``?`` matches one character other than ``/``, everything else is literal.
A pattern matches the whole name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from .settingerror import ConfigError

__all__ = ["compile_glob", "matches_any", "string_list"]


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


def string_list(key: str, value: Any, *, non_empty: bool = False) -> tuple[str, ...]:
    """A config value that is a string or a list of non-empty strings; ConfigError naming ``key``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (non_empty and not value) or not all(isinstance(v, str) and v for v in value):
        what = "a non-empty list" if non_empty else "a list"
        raise ConfigError(f"{key}: expected {what} of non-empty strings, got {value!r}")
    return tuple(value)


def matches_any(patterns: Iterable[str], name: str) -> bool:
    return any(compile_glob(p).match(name) for p in patterns)

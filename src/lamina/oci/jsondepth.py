"""How deeply a JSON document nests, measured before it is parsed.

Python's ``json`` parser recurses once per level, so a small document nested a thousand levels deep
raises RecursionError instead of ValueError; a registry answers such a body with a clear 400 before
parsing it. Go's encoding/json (CNCF distribution) stops at 10,000 levels; an OCI manifest, index or
config needs fewer than ten, so lamina's registry refuses bodies deeper than ``max_json_depth`` (64).
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "exceeds_json_depth", "json_depth"]

DEFAULT_MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(data: bytes | str, stop_after: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``data`` (0 for a scalar), brackets inside strings
    not counted; with ``stop_after``, counting stops as soon as the depth passes it. Malformed JSON gets
    an estimate (the parser rejects it afterwards)."""
    raw = data.encode() if isinstance(data, str) else data
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_after is not None and deepest > stop_after:
                    return deepest
        else:
            depth -= 1
    return deepest


def exceeds_json_depth(data: bytes | str, limit: int) -> bool:
    """Whether ``data`` nests deeper than ``limit`` levels."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:  # too few brackets to nest deeper: skip the scan
        return False
    return json_depth(raw, stop_after=limit) > limit

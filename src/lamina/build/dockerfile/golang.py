"""The few Go formatting rules that leak into image history text and config values.

BuildKit writes history with Go's ``fmt`` (``CMD %q`` of a string slice, ``HEALTHCHECK %+v`` of a
struct holding ``time.Duration`` values) and parses HEALTHCHECK options with ``time.ParseDuration``;
reproducing them keeps lamina's ``created_by`` texts and Healthcheck values identical to BuildKit's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["go_duration", "go_quote", "go_quote_list", "parse_go_duration"]

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def go_quote_list(items: Sequence[str] | None) -> str:
    """``fmt.Sprintf("%q", []string{...})``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items or ()) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()`` (``1m30s``, ``300ms``, ``0s``)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        for limit, scale, unit in ((1_000, 1, "ns"), (1_000_000, 1_000, "µs"), (1_000_000_000, 1_000_000, "ms")):
            if u < limit:
                return sign + _decimal(u, scale) + unit
    seconds, frac = divmod(u, 1_000_000_000)
    text = _decimal(seconds % 60 * 1_000_000_000 + frac, 1_000_000_000) + "s"
    minutes, hours = seconds // 60 % 60, seconds // 3600
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds; raises ValueError on bad input."""
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"time: invalid duration {go_quote(text)}")
    from fractions import Fraction  # here: exact sums (Go's), but only HEALTHCHECK durations need it at all

    total = Fraction(0)
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            if re.match(r"(\d+\.?\d*|\.\d+)$", body[pos:]):
                raise ValueError(f"time: missing unit in duration {go_quote(text)}")
            raise ValueError(f"time: invalid duration {go_quote(text)}")
        total += Fraction(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * int(total)

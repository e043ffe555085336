"""The registry's limits (``[limits]`` in the settings file): what one client may take, with defaults.

Every limit is answered with a spec error code in the registry's JSON error format (docs/registry.md,
"Limits"): a blob over ``max_blob_bytes`` is 413 ``SIZE_INVALID``; an upload session over the per-repository
or per-user count is 429 ``TOOMANYREQUESTS`` with ``Retry-After``; ``n`` above a listing's maximum is 400
``PAGINATION_NUMBER_INVALID`` (CNCF distribution refuses it too rather than clamping); a body that stalls
is 408 ``BLOB_UPLOAD_INVALID`` and the connection is closed; an idle connection is closed.

Why these defaults:
- ``max_blob_bytes`` 10 GiB: GHCR's per-layer limit, above any layer a CI build pushes; ML images with
  bigger layers raise it.
- 256 open upload sessions per repository, 128 per user: a client uploads a handful of blobs at a time
  (docker 5, skopeo 6 and BuildKit's exporters a few per image), and a session closes when its blob is
  committed, so a CI push holds a few dozen at most; 128 lets one user run ~16 such pushes at once plus
  the sessions its crashed jobs abandoned, which stop counting after ``upload_expiry_seconds``.
- Page sizes: the catalog as distribution (100 by default, ``catalog.maxentries`` 1000); tags and
  referrers 1000 by default (one page for every repository that has fewer, as before: clients that do
  not follow ``Link`` keep working) and at most 10,000 per page.
- ``idle_timeout_seconds`` 120: above Go's 90 s client idle timeout (docker, containerd, skopeo), so the
  server does not close a pooled connection before the client would; a connection that sends no complete
  request head within that time (none at all, or a trickle of header bytes) is closed.
- ``body_timeout_seconds`` 60 and ``body_min_bytes_per_second`` 1024 (nginx's client_body_timeout is
  60 s): a body that delivers less than 60 KiB in any 60 s the server spends waiting for it is cut off.

This module is plain settings and their parser (no aiohttp): :mod:`lamina.registry.config` reads the
``[limits]`` table through :func:`parse_limits`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LimitSettings", "LimitsError", "parse_limits"]

GiB = 1 << 30


class LimitsError(ValueError):
    """A bad ``[limits]`` value; the message names the key (``limits.KEY``) and the value."""


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_blob_bytes: int = 10 * GiB
    upload_sessions_per_repository: int = 256
    upload_sessions_per_user: int = 128
    catalog_page_size: int = 100
    catalog_max_page_size: int = 1000
    tags_page_size: int = 1000
    tags_max_page_size: int = 10_000
    referrers_page_size: int = 1000
    referrers_max_page_size: int = 10_000
    idle_timeout_seconds: float = 120.0
    body_timeout_seconds: float = 60.0
    body_min_bytes_per_second: int = 1024

    def page_size(self, listing: str) -> tuple[int, int]:
        """``(default n, maximum n)`` of ``listing``: ``catalog``, ``tags`` or ``referrers``."""
        return getattr(self, f"{listing}_page_size"), getattr(self, f"{listing}_max_page_size")


_MINIMUM = {"max_blob_bytes": 1, "body_min_bytes_per_second": 0}  # others: integers >= 1, times > 0
_TIMES = ("idle_timeout_seconds", "body_timeout_seconds")


def _value(key: str, value: Any) -> int | float:
    if key in _TIMES:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise LimitsError(f"limits.{key}: expected a positive number of seconds, got {value!r}")
        return float(value)
    minimum = _MINIMUM.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LimitsError(f"limits.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def parse_limits(table: Any) -> LimitSettings:
    """The ``[limits]`` table; LimitsError naming the first bad key."""
    if not isinstance(table, Mapping):
        raise LimitsError(f"limits: expected a table of settings, got {table!r}")
    known = [f.name for f in dataclasses.fields(LimitSettings)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise LimitsError(f"limits: unknown setting {key!r} (known: {', '.join(known)})")
        values[key] = _value(key, value)
    settings = LimitSettings(**values)
    for listing in ("catalog", "tags", "referrers"):
        default, maximum = settings.page_size(listing)
        if default > maximum:
            raise LimitsError(
                f"limits.{listing}_page_size: {default} is above limits.{listing}_max_page_size ({maximum})"
            )
    return settings

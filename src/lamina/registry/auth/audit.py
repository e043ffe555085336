"""The audit log: one JSON line per request refused for an auth reason (401, 403, 429), on the
``lamina.registry.audit`` logger.

Fields: ``time`` (UTC, ISO 8601), ``remote`` (the client's address as the server saw it),
``user`` (the name the caller presented, or null for anonymous), ``credentials``
(``none`` | ``basic`` | ``bearer``), ``method``, ``path`` (without the query, which can carry a
password grant's fields), ``repository`` and ``action`` (null outside a repository), ``status`` and
``reason``. Never a password, a token or an ``Authorization`` header: reasons are built from names
and decisions only.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

from aiohttp import web

__all__ = ["AUDIT_LOGGER", "audit_denied", "configure_audit_log"]

AUDIT_LOGGER = "lamina.registry.audit"
_log = logging.getLogger(AUDIT_LOGGER)


def _credentials(request: web.Request) -> str:
    scheme = request.headers.get("Authorization", "").split(" ", 1)[0].lower()
    return scheme if scheme in ("basic", "bearer") else ("none" if not scheme else "other")


def audit_denied(
    request: web.Request,
    status: int,
    reason: str,
    *,
    user: str | None,
    repository: str | None = None,
    action: str | None = None,
) -> None:
    """Write the audit line of one refused request."""
    now = datetime.datetime.now(datetime.UTC)
    _log.warning(json.dumps({
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "remote": request.remote,
        "user": user,
        "credentials": _credentials(request),
        "method": request.method,
        "path": request.path,
        "repository": repository,
        "action": action,
        "status": status,
        "reason": reason,
    }, separators=(",", ":")))


def configure_audit_log() -> None:
    """Audit lines are bare JSON objects on stderr (one per line), whatever ``--log-level`` says."""
    if _log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)
    _log.propagate = False

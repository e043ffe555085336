"""One Bearer token request to a realm, and how long its answer may be used.

distribution docs, "Token Authentication Specification" and "OAuth2 token authentication": GET the realm
with ``service``, one ``scope`` per resource and ``account``, under HTTP Basic when we have a username
and password (anonymous otherwise); with an identity token (``identitytoken`` in config.json, a helper's
``<token>`` user) POST a ``refresh_token`` grant instead. The answer holds ``token`` (or
``access_token``), ``expires_in`` (default 60 s) and maybe ``issued_at``: a token is used until a fifth
of its lifetime (at most 30 s) before it runs out, then renewed.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from .credentials import Credentials
from .errors import RegistryUnreachable, Unauthorized
from .http11 import Answer, ConnectError, HTTPError, RequestBody, TLSError
from .scopes import ScopeSet
from .urls import URL

__all__ = ["Send", "Token", "fetch_token", "token_lifetime"]

# One HTTP exchange (method, url, headers, body) -> the answer: the registry transport's ``send``.
Send = Callable[[str, URL, Mapping[str, str] | None, RequestBody], Awaitable[Answer]]

DEFAULT_EXPIRY = 60.0  # the token spec's default when expires_in is missing
MAX_RENEW_MARGIN = 30.0
_CLIENT_ID = "lamina"
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    scopes: ScopeSet  # what we asked for (a realm may grant less; the registry then answers 401 again)
    renew_at: float  # time.monotonic() after which a new one is fetched before use
    expires_at: float


def _parse_time(value: object) -> float | None:
    """RFC 3339 ``issued_at`` (nanosecond fractions and ``Z`` allowed) -> epoch seconds, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00"))).timestamp()
    except ValueError:
        return None


def token_lifetime(doc: dict[str, Any], wall_now: float) -> float:
    """Seconds the token stays valid from ``wall_now``: ``expires_in`` counted from ``issued_at`` when that
    is plausible (in the past, not before the lifetime began); a clock far off falls back to our own."""
    expires = doc.get("expires_in")
    valid = isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0
    lifetime = float(expires) if valid else DEFAULT_EXPIRY  # type: ignore[arg-type]
    issued = _parse_time(doc.get("issued_at"))
    if issued is not None:
        left = issued + lifetime - wall_now
        if 0 < left <= lifetime:
            return left
    return lifetime


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


async def fetch_token(
    send: Send, *, registry: str, realm: str, service: str | None, scopes: ScopeSet,
    creds: Credentials | None,
) -> Token:
    """Ask ``realm`` for a token covering ``scopes``; Unauthorized / RegistryUnreachable naming it on failure."""
    rendered = scopes.render()
    what = f"token for {scopes} from {realm}"
    started, wall = time.monotonic(), time.time()
    try:
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": _CLIENT_ID}
            if service:
                form["service"] = service
            if rendered:
                form["scope"] = " ".join(rendered)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            doc = await _read(await send("POST", URL(realm), headers, urlencode(form).encode()), registry, what)
        else:
            params: list[tuple[str, str]] = [("service", service)] if service else []
            params.extend(("scope", s) for s in rendered)
            headers = {}
            if creds is not None and creds.has_basic:
                params.append(("account", creds.username or ""))
                headers["Authorization"] = _basic(creds)
            doc = await _read(await send("GET", URL(realm).extend_query(params), headers, None), registry, what)
    except TLSError as exc:
        raise RegistryUnreachable(None, "TLS_ERROR", f"cannot get a {what}: {exc.reason}", registry=registry) from None
    except ConnectError as exc:
        raise RegistryUnreachable(None, "UNREACHABLE", f"cannot get a {what}: {exc}", registry=registry) from None
    except HTTPError as exc:
        raise Unauthorized(None, "UNAUTHORIZED", f"could not get a {what}: {exc}", registry=registry) from None
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unauthorized(200, "UNAUTHORIZED", f"the answer to the {what} holds no token", registry=registry)
    lifetime = token_lifetime(doc, wall)
    margin = min(MAX_RENEW_MARGIN, lifetime / 5)
    return Token(token, scopes, started + max(lifetime - margin, 1.0), started + lifetime)


async def _read(resp: Answer, registry: str, what: str) -> dict[str, Any]:
    try:
        body = await resp.read()
    finally:
        resp.release()
    if resp.status != 200:
        text = " ".join(body[:200].decode("utf-8", "replace").split())
        raise Unauthorized(resp.status, "UNAUTHORIZED", f"could not get a {what}: {text or resp.reason}",
                           registry=registry)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise Unauthorized(resp.status, "UNAUTHORIZED", f"the answer to the {what} is not a JSON object",
                           registry=registry)
    return doc

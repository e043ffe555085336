"""The registry auth handshake: parse ``WWW-Authenticate``, answer Basic or fetch and cache Bearer tokens.

Implements Docker's token authentication (distribution docs "Token Authentication Specification" and
"OAuth2 token authentication"): on a 401 the registry names a realm, a service and a scope; we GET the
realm with ``service`` and one ``scope`` per resource (Basic credentials when we have them, anonymous
otherwise), or POST a ``refresh_token`` grant when the credentials are an identity token. Tokens are
cached per scope set until shortly before ``expires_in`` runs out, and once a registry has challenged
us we authenticate proactively so later requests do not pay a 401 round trip each.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from .credentials import Credentials
from .errors import RegistryUnreachable, Unauthorized

__all__ = ["Authenticator", "Challenge", "parse_challenge", "pull_scope", "push_scope"]

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
_DEFAULT_EXPIRY = 60.0  # the token spec's default when expires_in is missing
_CLIENT_ID = "lamina"


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """Parse the first challenge of a ``WWW-Authenticate`` value (RFC 7235); None when unparseable."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match or match.end() == pos:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "")
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme.lower(), params)


CredentialGetter = Callable[[], Awaitable[Credentials | None]]


class Authenticator:
    """Per-registry auth state: the challenge last seen and the Bearer tokens obtained, by scope set."""

    def __init__(self, registry: str, session_getter: Callable[[], aiohttp.ClientSession],
                 credentials: CredentialGetter) -> None:
        self._registry = registry
        self._session = session_getter
        self._credentials = credentials
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self.token_requests = 0  # how many times we asked a realm; tests and progress read it

    @property
    def challenged(self) -> bool:
        return self._challenge is not None

    async def header(self, scopes: Sequence[str]) -> str | None:
        """The Authorization value to send for ``scopes`` now, or None (anonymous / not challenged yet)."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = await self._credentials()
            if creds is None or not creds.has_basic:
                return None
            raw = f"{creds.username}:{creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if challenge.scheme == "bearer":
            return f"Bearer {await self._token(tuple(sorted(set(scopes))))}"
        return None

    def on_unauthorized(self, www_authenticate: str | None, scopes: Sequence[str]) -> bool:
        """Record a 401's challenge; True when a retry with fresh credentials can help."""
        challenge = parse_challenge(www_authenticate or "")
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        if challenge.scheme == "bearer" and "realm" not in challenge.params:
            return False
        first_time = self._challenge != challenge
        self._challenge = challenge
        key = tuple(sorted(set(scopes)))
        had_token = self._tokens.pop(key, None) is not None
        return first_time or had_token or challenge.params.get("error") == "insufficient_scope"

    async def _token(self, scopes: tuple[str, ...]) -> str:
        lock = self._locks.setdefault(scopes, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(scopes)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            token, lifetime = await self._fetch_token(scopes)
            # Refresh a little early so a token never expires between header() and the server's check.
            self._tokens[scopes] = (token, time.monotonic() + max(lifetime * 0.9 - 5.0, 1.0))
            return token

    async def _fetch_token(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        assert self._challenge is not None
        realm = self._challenge.params["realm"]
        service = self._challenge.params.get("service")
        creds = await self._credentials()
        session = self._session()
        what = f"token for {' '.join(scopes) or 'registry access'} from {realm}"
        self.token_requests += 1
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": _CLIENT_ID}
                if service:
                    form["service"] = service
                if scopes:
                    form["scope"] = " ".join(scopes)
                async with session.post(realm, data=form) as resp:
                    return await self._read_token(resp, what)
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params.extend(("scope", s) for s in scopes)
            headers = {}
            if creds is not None and creds.has_basic:
                params.append(("account", creds.username or ""))
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            async with session.get(realm, params=params, headers=headers) as resp:
                return await self._read_token(resp, what)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise RegistryUnreachable(None, "UNREACHABLE", f"cannot get a {what}: {exc or type(exc).__name__}",
                                      registry=self._registry) from None

    async def _read_token(self, resp: aiohttp.ClientResponse, what: str) -> tuple[str, float]:
        body = await resp.read()
        if resp.status != 200:
            text = body[:200].decode("utf-8", "replace").strip()
            raise Unauthorized(resp.status, "UNAUTHORIZED", f"could not get a {what}: {text or resp.reason}",
                               registry=self._registry)
        try:
            doc = await resp.json(content_type=None)
        except ValueError:
            doc = None
        token = None
        if isinstance(doc, dict):
            token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise Unauthorized(resp.status, "UNAUTHORIZED", f"the answer to the {what} holds no token",
                               registry=self._registry)
        expires = doc.get("expires_in") if isinstance(doc, dict) else None
        lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else _DEFAULT_EXPIRY
        return token, lifetime

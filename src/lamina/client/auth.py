"""The registry auth handshake: parse ``WWW-Authenticate``, answer Basic, or get one Bearer token at a time.

Implements Docker's token authentication (distribution docs "Token Authentication Specification"). Per
registry there is one current token, asked for the union of every scope declared up front (the builder
declares what it will pull and push, see :meth:`Authenticator.declare`) and every scope a request has
needed so far, so a build typically makes one token request per registry. Fetches are single-flight:
however many concurrent requests find no usable token (none yet, about to expire, lacking a scope, or
refused by the registry), one request goes to the realm and every one of them waits for its answer.

A 401 is retried by comparing what the request *sent* with what is current (:meth:`on_unauthorized`):
sent nothing or an older token -> retry with the current one; sent the current token and still refused
(expired early, revoked, ``insufficient_scope``) -> drop it and fetch once more; refused again -> give
up with an error naming the registry, the repository and the scope. Basic (ECR, htpasswd) works the
same way: sent nothing -> retry with the credentials; credentials refused -> give up.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .credentials import Credentials
from .errors import Unauthorized
from .scopes import ScopeSet, pull_scope, push_scope

if TYPE_CHECKING:  # the token client is loaded at the first Bearer challenge (a plain registry never sends one)
    from .tokens import Send, Token

__all__ = ["Authenticator", "Challenge", "Verdict", "parse_challenge", "pull_scope", "push_scope"]

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` challenge (RFC 7235): its scheme and its auth-params (realm, service, scope)."""

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


class Verdict(enum.Enum):
    """What a request that got 401 should do next."""

    RETRY = "retry"  # it sent nothing or an outdated credential: send the current one
    RENEWED = "renewed"  # it sent the current token, which was dropped and fetched again: retry once
    GIVE_UP = "give up"


CredentialGetter = Callable[[], Awaitable[Credentials | None]]


@dataclass(slots=True)
class _Fetch:
    """A token request in flight, shared by every request that needs the same scopes."""

    scopes: ScopeSet
    task: asyncio.Task[Token]


class Authenticator:
    """Per-registry auth state: the challenge (realm, service), the scopes wanted and the current token."""

    def __init__(self, registry: str, send: Send, credentials: CredentialGetter) -> None:
        self._registry = registry
        self._send = send
        self._credentials = credentials
        self._challenge: Challenge | None = None
        self._wanted = ScopeSet()
        self._token: Token | None = None
        self._fetch: _Fetch | None = None
        self.token_requests = 0  # how many times we asked a realm; tests and progress read it

    @property
    def challenged(self) -> bool:
        return self._challenge is not None

    @property
    def scheme(self) -> str | None:
        return self._challenge.scheme if self._challenge else None

    def declare(self, scopes: Sequence[str]) -> None:
        """Scopes the caller will need later: every token from now on asks for them too."""
        self._wanted = self._wanted | ScopeSet.parse(scopes)

    async def header(self, scopes: Sequence[str]) -> str | None:
        """The Authorization value to send for ``scopes`` now, or None (anonymous / not challenged yet)."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = await self._credentials()
            if creds is None or not creds.has_basic:
                return None
            return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        token = await self._usable(ScopeSet.parse(scopes), refused=None)
        return f"Bearer {token.value}"

    async def on_unauthorized(self, www_authenticate: str | None, scopes: Sequence[str],
                              sent: str | None) -> Verdict:
        """A request for ``scopes`` that sent ``sent`` (its Authorization value) got 401: what next.

        Waits, when a new token is needed, for the one fetch every concurrent request shares.
        """
        challenge = parse_challenge(www_authenticate or "")
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return Verdict.GIVE_UP
        if challenge.scheme == "bearer" and "realm" not in challenge.params:
            return Verdict.GIVE_UP
        # The realm and service stay; scope and error describe this one request.
        kept = {k: v for k, v in challenge.params.items() if k in ("realm", "service")}
        if self._challenge is None or self._challenge.scheme != challenge.scheme or self._challenge.params != kept:
            self._challenge = Challenge(challenge.scheme, kept)
            self._token = None  # a token from another realm or service means nothing here
        if challenge.scheme == "basic":
            if sent is not None and sent.lower().startswith("basic "):
                return Verdict.GIVE_UP  # these credentials were refused: resending them cannot help
            creds = await self._credentials()
            return Verdict.RETRY if creds is not None and creds.has_basic else Verdict.GIVE_UP
        need = ScopeSet.parse(scopes) | ScopeSet.parse([challenge.params.get("scope", "")])
        self._wanted = self._wanted | need
        sent_token = sent[7:] if sent is not None and sent.lower().startswith("bearer ") else None
        current = self._token
        if sent_token is None or current is None or sent_token != current.value:
            await self._usable(need, refused=None)  # sent nothing or an older token: the current one, covering need
            return Verdict.RETRY
        await self._usable(need, refused=sent_token)
        return Verdict.RENEWED

    async def explain(self, scopes: Sequence[str]) -> str:
        """Why a request for ``scopes`` stays unauthorized, for the one-line error (never a secret)."""
        creds = await self._credentials()
        wanted = ScopeSet.parse(scopes)
        login = f"no credentials for {self._registry} in the docker config (run `lamina login {self._registry}`)"
        if self._challenge is None:
            return f"the registry refused {wanted} without asking for credentials"
        if self._challenge.scheme == "basic":
            if creds is None or not creds.has_basic:
                return f"the registry needs Basic login: {login}"
            return f"the registry refused user {creds.username!r} (Basic) for {wanted}"
        who = login if creds is None else (
            "identity token" if creds.identity_token else f"user {creds.username!r}"
        )
        realm = self._challenge.params.get("realm", "")
        return f"a token from {realm} for {wanted} was refused ({who})"

    async def close(self) -> None:
        fetch, self._fetch = self._fetch, None
        if fetch is not None and not fetch.task.done():
            fetch.task.cancel()
            await asyncio.gather(fetch.task, return_exceptions=True)

    # -- the one token ------------------------------------------------------------------------------

    async def _usable(self, need: ScopeSet, refused: str | None) -> Token:
        """The current token if it covers ``need``, is not about to expire and is not ``refused``; else
        the result of the one fetch in flight (joined) or of a new one for everything wanted."""
        while True:
            token = self._token
            if (token is not None and token.value != refused and token.scopes.covers(need)
                    and time.monotonic() < token.renew_at):
                return token
            fetch = self._fetch
            if fetch is not None and fetch.scopes.covers(need):
                return await asyncio.shield(fetch.task)  # its failure is everyone's: one error, one request
            if fetch is not None:  # a narrower fetch in flight: let it land, then ask for the union
                await asyncio.gather(asyncio.shield(fetch.task), return_exceptions=True)
                continue
            scopes = self._wanted | need
            self._wanted = scopes
            fetch = self._fetch = _Fetch(scopes, asyncio.ensure_future(self._new_token(scopes, need)))
            try:
                return await asyncio.shield(fetch.task)
            finally:
                if self._fetch is fetch and fetch.task.done():
                    self._fetch = None

    async def _new_token(self, scopes: ScopeSet, need: ScopeSet) -> Token:
        """A token for ``scopes`` (everything wanted); a realm that refuses the whole request because of a
        scope it will not grant (some answer 401/403 rather than a narrower token) is asked again for
        ``need`` alone, and the declared scopes on other resources are no longer asked for up front."""
        challenge = self._challenge
        assert challenge is not None and challenge.scheme == "bearer"
        creds = await self._credentials()
        try:
            try:
                token = await self._ask(challenge, scopes, creds)
            except Unauthorized as exc:
                if exc.status not in (401, 403) or scopes == need:
                    raise
                token = await self._ask(challenge, need, creds)
                using = {(kind, name) for kind, name, _ in need.items}
                self._wanted = ScopeSet(frozenset(i for i in self._wanted.items if (i[0], i[1]) in using
                                                  or i not in scopes.items))
        finally:
            if self._fetch is not None and self._fetch.scopes == scopes:
                self._fetch = None
        if self._challenge is challenge:
            self._token = token
        return token

    async def _ask(self, challenge: Challenge, scopes: ScopeSet, creds: Credentials | None) -> Token:
        from .tokens import fetch_token

        self.token_requests += 1
        return await fetch_token(
            self._send, registry=self._registry, realm=challenge.params["realm"],
            service=challenge.params.get("service"), scopes=scopes, creds=creds,
        )

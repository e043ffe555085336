"""The authorizer: who is asking (anonymous, Basic user, bearer token) and what they may do where.

Access rules grant actions (pull, push, delete) on repository globs to users, groups, every
authenticated user (``"*"``) or, for pull only, anonymous clients. Grants add up across rules; nothing is
allowed unless some rule allows it. A bearer token carries its own grants (issued from the same rules by
our token endpoint, or by a trusted external issuer), and is never stretched beyond them: a token for one
repository reads and writes nothing else.

Failed Basic logins (on ``/v2/``, on ``/token`` and in the console) are counted by
:class:`~.limits.LoginLimiter`; a locked user and address get :class:`TooManyFailures` before any
password is checked.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from lamina.store.roles import LoginFailures

from ..globs import matches_any
from .config import ACTIONS, AuthConfig
from .htpasswd import Htpasswd
from .limits import LoginLimiter
from .tokens import Access, TokenError, TokenIssuer, TokenVerifier, load_or_create_key, load_public_key

__all__ = ["AUTH", "AuthFailure", "AuthService", "Identity", "TooManyFailures", "parse_scopes"]

CATALOG = ("registry", "catalog")


class AuthFailure(Exception):
    """Credentials were sent but are wrong (bad password, bad token): 401. ``user``: the name they claim."""

    def __init__(self, message: str, user: str | None = None) -> None:
        super().__init__(message)
        self.user = user


class TooManyFailures(AuthFailure):
    """Too many failed logins for this user and client address (or this address): 429 with Retry-After."""

    def __init__(self, user: str, retry_after: int) -> None:
        super().__init__(f"too many failed logins for {user!r} from this address; retry in {retry_after} s", user)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None  # None: anonymous
    method: str  # "anonymous" | "basic" | "bearer"
    grant: Access | None = None  # bearer only


def parse_scopes(values: list[str]) -> dict[tuple[str, str], frozenset[str]]:
    """``repository:NAME:pull,push`` (space-separated or repeated) -> {(type, name): actions}."""
    scopes: dict[tuple[str, str], frozenset[str]] = {}
    for value in values:
        for item in value.split():
            kind, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not name:
                continue
            key = (kind.split("(", 1)[0], name)
            scopes[key] = scopes.get(key, frozenset()) | frozenset(a for a in actions.split(",") if a)
    return scopes


class AuthService:
    def __init__(self, config: AuthConfig, root: Path, failures: Callable[[], LoginFailures]) -> None:
        """``failures``: the metadata store holding the failed-login counters (asked at each use: the
        registry opens its storage after building the app)."""
        self.config = config
        self.htpasswd = Htpasswd(config.htpasswd) if config.htpasswd is not None else None
        self.limiter = LoginLimiter(failures, config.failed_logins)
        token = config.token
        self.issuer: TokenIssuer | None = None
        if token.external_public_key is not None:
            self.verifier = TokenVerifier(
                load_public_key(token.external_public_key), issuer=token.issuer, service=token.service
            )
        else:
            key = load_or_create_key(token.key_path(root))
            self.issuer = TokenIssuer(key, issuer=token.issuer, service=token.service, lifetime=token.lifetime_seconds)
            self.verifier = self.issuer.verifier()

    # -- who --------------------------------------------------------------------------------------

    def basic_user(self, header: str, address: str) -> str:
        """The user of a valid ``Basic`` header sent from ``address``; AuthFailure otherwise (TooManyFailures
        while that user and address are locked out). Blocking (bcrypt, the limiter's database): call in a thread."""
        try:
            decoded = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode()
            user, sep, password = decoded.partition(":")
        except (IndexError, binascii.Error, UnicodeDecodeError):
            raise AuthFailure("malformed Basic credentials") from None
        if not sep:
            raise AuthFailure("malformed Basic credentials: expected user:password")
        locked = self.limiter.retry_after(user, address)
        if locked:
            raise TooManyFailures(user, locked)
        if self.htpasswd is None or not self.htpasswd.verify(user, password):
            lockout = self.limiter.record_failure(user, address)
            if lockout:
                raise TooManyFailures(user, lockout)
            raise AuthFailure(f"invalid username or password for {user!r}", user)
        return user

    def identify(self, header: str | None, address: str) -> Identity:
        """Identity for an ``Authorization`` header from ``address``; AuthFailure for wrong credentials.
        May block (bcrypt)."""
        if not header:
            return Identity(None, "anonymous")
        scheme = header.split(" ", 1)[0].lower()
        if scheme == "basic":
            return Identity(self.basic_user(header, address), "basic")
        if scheme == "bearer":
            try:
                grant = self.verifier.verify(header.split(" ", 1)[1].strip() if " " in header else "")
            except TokenError as exc:
                raise AuthFailure(str(exc)) from None
            return Identity(grant.subject or None, "bearer", grant.access)
        raise AuthFailure(f"unsupported authorization scheme {scheme!r}: use Basic or Bearer")

    # -- what -------------------------------------------------------------------------------------

    def _groups(self, user: str) -> set[str]:
        return {group for group, members in self.config.groups.items() if user in members}

    def rule_actions(self, user: str | None, repository: str) -> frozenset[str]:
        """What the access rules let ``user`` (None: anonymous) do in ``repository``."""
        granted: set[str] = set()
        groups = self._groups(user) if user is not None else set()
        for rule in self.config.rules:
            if not matches_any(rule.repositories, repository):
                continue
            if rule.anonymous_pull:
                granted.add("pull")
            if user is not None and ("*" in rule.users or user in rule.users or groups & set(rule.groups)):
                granted |= rule.actions
        return frozenset(granted)

    def actions(self, identity: Identity, repository: str) -> frozenset[str]:
        if identity.method == "bearer":
            return (identity.grant or {}).get(("repository", repository), frozenset())
        return self.rule_actions(identity.user, repository)

    def may_list_catalog(self, identity: Identity) -> bool:
        if identity.method == "bearer":
            return "*" in (identity.grant or {}).get(CATALOG, frozenset())
        return identity.user is not None

    def may_see(self, identity: Identity, repository: str) -> bool:
        """Whether a listing (the catalog) may name ``repository`` to this caller: where it may pull.

        A token holding ``registry:catalog:*`` lists what its subject's rules allow now (as
        distribution's token servers evaluate ``registry:catalog:*``), plus the repositories the token
        itself grants pull on; a token without it sees nothing."""
        if identity.method == "bearer":
            grant = identity.grant or {}
            if "pull" in grant.get(("repository", repository), frozenset()):
                return True
            return "*" in grant.get(CATALOG, frozenset()) and "pull" in self.rule_actions(identity.user, repository)
        return "pull" in self.rule_actions(identity.user, repository)

    def grant_for(self, user: str | None, requested: dict[tuple[str, str], frozenset[str]]) -> Access:
        """The subset of ``requested`` scopes the rules allow ``user``: what a token may carry."""
        granted: dict[tuple[str, str], frozenset[str]] = {}
        for (kind, name), actions in requested.items():
            if kind == "repository":
                allowed = self.rule_actions(user, name) & actions & frozenset(ACTIONS)
            elif (kind, name) == CATALOG and user is not None:
                allowed = actions & frozenset({"*"})
            else:
                allowed = frozenset()
            if allowed:
                granted[(kind, name)] = allowed
        return granted

    # -- challenges -------------------------------------------------------------------------------

    def realm(self, request: web.Request) -> str:
        return self.config.token.realm or f"{request.scheme}://{request.host}/token"

    def challenge(self, request: web.Request, scope: str | None, error: str | None = None) -> str:
        parts = [f'realm="{self.realm(request)}"', f'service="{self.config.token.service}"']
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)


AUTH = web.AppKey("auth", AuthService)

"""The ``[auth]`` settings: users, groups, access rules and token settings, validated once at load.

::

    [auth]
    htpasswd = "/etc/lamina/htpasswd"          # bcrypt entries (htpasswd -B)
    groups = { ci = ["runner"], admins = ["alice"] }

    [[auth.rules]]                              # grants add up; nothing is allowed unless a rule allows it
    repositories = ["cache/**", "apps/*"]       # globs (see lamina.registry.globs)
    users = ["alice"]                           # "*" = every authenticated user
    groups = ["ci"]
    actions = ["pull", "push"]                  # pull | push | delete
    anonymous_pull = false                      # true: anyone may pull these repositories

    [auth.token]
    service = "lamina-registry"                 # the JWT audience and the challenge's service
    issuer = "lamina"
    lifetime_seconds = 300
    signing_key = "/etc/lamina/token.pem"       # default ROOT/auth/token-signing-key.pem (created)
    realm = "https://registry.example/token"    # default: this server's /token as the client reached it
    external_public_key = "/etc/lamina/issuer.pub"  # trust an external issuer instead of issuing tokens

    [auth.failed_logins]                        # Basic auth on /v2/ and on /token (lamina.registry.auth.limits)
    max_failures = 10                           # per user and client address within one window
    max_failures_per_address = 100              # per client address, whatever the usernames
    window_seconds = 60
    lockout_seconds = 60                        # then 429 + Retry-After; doubles at each further lockout ...
    max_lockout_seconds = 900                   # ... up to this
    max_tracked = 10000                         # keys remembered at most
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..globs import string_list
from ..settingerror import ConfigError
from .limits import LoginLimits

__all__ = ["ACTIONS", "AccessRule", "AuthConfig", "TokenSettings", "parse_auth"]

ACTIONS = ("pull", "push", "delete")


@dataclass(frozen=True, slots=True)
class AccessRule:
    repositories: tuple[str, ...]
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    actions: frozenset[str] = frozenset()
    anonymous_pull: bool = False


@dataclass(frozen=True, slots=True)
class TokenSettings:
    service: str = "lamina-registry"
    issuer: str = "lamina"
    lifetime_seconds: int = 300
    signing_key: Path | None = None
    realm: str | None = None
    external_public_key: Path | None = None

    def key_path(self, root: Path) -> Path:
        """Where the signing key lives: ``signing_key``, else ``ROOT/auth/token-signing-key.pem``."""
        return self.signing_key or root / "auth" / "token-signing-key.pem"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    htpasswd: Path | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rules: tuple[AccessRule, ...] = ()
    token: TokenSettings = TokenSettings()
    failed_logins: LoginLimits = field(default_factory=LoginLimits)


def _table(key: str, value: Any, known: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
    for name in value:
        if name not in known:
            raise ConfigError(f"unknown setting {key}.{name} (known: {', '.join(known)})")
    return value


def _rule(index: int, value: Any) -> AccessRule:
    key = f"auth.rules[{index}]"
    table = _table(key, value, ("repositories", "users", "groups", "actions", "anonymous_pull"))
    if "repositories" not in table:
        raise ConfigError(f"{key}: 'repositories' (a list of globs) is required")
    actions = string_list(f"{key}.actions", table.get("actions", []))
    for action in actions:
        if action not in ACTIONS:
            raise ConfigError(f"{key}.actions: unknown action {action!r} (known: {', '.join(ACTIONS)})")
    anonymous = table.get("anonymous_pull", False)
    if not isinstance(anonymous, bool):
        raise ConfigError(f"{key}.anonymous_pull: expected true or false, got {anonymous!r}")
    return AccessRule(
        repositories=string_list(f"{key}.repositories", table["repositories"]),
        users=string_list(f"{key}.users", table.get("users", [])),
        groups=string_list(f"{key}.groups", table.get("groups", [])),
        actions=frozenset(actions),
        anonymous_pull=anonymous,
    )


def _path(key: str, value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"{key}: expected a file path, got {value!r}")
    return Path(value)


def _token(value: Any) -> TokenSettings:
    known = ("service", "issuer", "lifetime_seconds", "signing_key", "realm", "external_public_key")
    table = _table("auth.token", value, known)
    settings: dict[str, Any] = {}
    for name in ("service", "issuer", "realm"):
        if name in table:
            if not isinstance(table[name], str) or not table[name]:
                raise ConfigError(f"auth.token.{name}: expected a non-empty string, got {table[name]!r}")
            settings[name] = table[name]
    if "lifetime_seconds" in table:
        life = table["lifetime_seconds"]
        if isinstance(life, bool) or not isinstance(life, int) or not 10 <= life <= 86400:
            raise ConfigError(f"auth.token.lifetime_seconds: expected an integer from 10 to 86400, got {life!r}")
        settings["lifetime_seconds"] = life
    for name in ("signing_key", "external_public_key"):
        if name in table:
            settings[name] = _path(f"auth.token.{name}", table[name])
    token = TokenSettings(**settings)
    if token.external_public_key is not None and token.realm is None:
        raise ConfigError("auth.token.realm: required with external_public_key (the external issuer's token URL)")
    return token


def _failed_logins(value: Any) -> LoginLimits:
    counts = {"max_failures": 1, "max_failures_per_address": 1, "max_tracked": 100}
    spans = ("window_seconds", "lockout_seconds", "max_lockout_seconds")
    table = _table("auth.failed_logins", value, (*counts, *spans))
    settings: dict[str, Any] = {}
    for name, minimum in counts.items():
        if name in table:
            number = table[name]
            if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
                raise ConfigError(f"auth.failed_logins.{name}: expected an integer >= {minimum}, got {number!r}")
            settings[name] = number
    for name in spans:
        if name in table:
            span = table[name]
            if isinstance(span, bool) or not isinstance(span, int | float) or not 1 <= span <= 86400:
                raise ConfigError(f"auth.failed_logins.{name}: expected seconds from 1 to 86400, got {span!r}")
            settings[name] = float(span)
    limits = LoginLimits(**settings)
    if limits.max_lockout_seconds < limits.lockout_seconds:
        raise ConfigError(
            f"auth.failed_logins.max_lockout_seconds: {limits.max_lockout_seconds:g} is below lockout_seconds "
            f"{limits.lockout_seconds:g}; raise it or lower lockout_seconds"
        )
    return limits


def parse_auth(value: Any) -> AuthConfig:
    """The ``[auth]`` table -> AuthConfig; ConfigError naming the key on any mistake."""
    table = _table("auth", value, ("htpasswd", "groups", "rules", "token", "failed_logins"))
    groups_value = table.get("groups", {})
    if not isinstance(groups_value, dict):
        raise ConfigError(f"auth.groups: expected a table of group = [users], got {groups_value!r}")
    groups = {str(name): string_list(f"auth.groups.{name}", members) for name, members in groups_value.items()}
    rules_value = table.get("rules", [])
    if not isinstance(rules_value, list):
        raise ConfigError(f"auth.rules: expected an array of tables ([[auth.rules]]), got {rules_value!r}")
    rules = tuple(_rule(i, rule) for i, rule in enumerate(rules_value))
    for i, rule in enumerate(rules):
        for group in rule.groups:
            if group not in groups:
                raise ConfigError(f"auth.rules[{i}].groups: unknown group {group!r} (define it in auth.groups)")
    token = _token(table.get("token", {}))
    htpasswd = _path("auth.htpasswd", table["htpasswd"]) if "htpasswd" in table else None
    if htpasswd is None and token.external_public_key is None:
        raise ConfigError("auth: set htpasswd (local users) or token.external_public_key (an external issuer)")
    limits = _failed_logins(table.get("failed_logins", {}))
    return AuthConfig(htpasswd=htpasswd, groups=groups, rules=rules, token=token, failed_logins=limits)

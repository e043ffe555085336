"""Registry credentials the way the docker CLI finds them, so `docker login` / ECR's helper just work.

Source: ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``):
``credHelpers[host]`` wins, then ``credsStore``, then the plain ``auths`` entry (base64 ``auth`` or
``username``/``password``, optional ``identitytoken``). Helpers are run as
``docker-credential-<name> get`` with the server on stdin and answer ``{"Username","Secret"}``
(docker-credential-helpers protocol); a ``<token>`` username means the secret is an identity token.
Docker Hub is stored under ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DOCKER_HUB_AUTH_KEY", "CredentialError", "CredentialStore", "Credentials", "registry_host", "server_key",
]

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT = 30.0


class CredentialError(Exception):
    """config.json is unreadable or a credential helper failed (other than "not found")."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A registry login as docker's config.json or a credential helper gives it: user and password, or a token."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None

    @property
    def has_basic(self) -> bool:
        return bool(self.username) and self.password is not None

    def __repr__(self) -> str:  # never print secrets in logs or tracebacks
        token = "***" if self.identity_token else None
        return f"Credentials(username={self.username!r}, password=***, identity_token={token})"


def server_key(host: str) -> str:
    """The key docker uses for ``host`` in config.json and as the helper's ServerURL."""
    return DOCKER_HUB_AUTH_KEY if host in _DOCKER_HUB_HOSTS else host


def registry_host(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000`` (docker's ConvertToHostname), Hub keys -> docker.io."""
    text = key
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.split("/", 1)[0]
    return "docker.io" if text in _DOCKER_HUB_HOSTS else text


class CredentialStore:
    """Looks up credentials per registry host; results (including misses) are cached for its lifetime."""

    def __init__(self, config_path: Path | None = None, *, config: dict[str, Any] | None = None) -> None:
        if config is None:
            path = config_path or self.default_path()
            config = self.read_config(path)
        self._config = config
        self._cache: dict[str, Credentials | None] = {}

    @staticmethod
    def default_path() -> Path:
        base = os.environ.get("DOCKER_CONFIG")
        return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"

    @staticmethod
    def read_config(path: Path) -> dict[str, Any]:
        """The parsed config.json at ``path`` ({} when missing or empty); CredentialError when unusable."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CredentialError(f"cannot read docker config {path}: {exc.strerror}") from None
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise CredentialError(f"docker config {path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise CredentialError(f"docker config {path} must be a JSON object")
        return doc

    async def get(self, host: str) -> Credentials | None:
        """Credentials for registry ``host`` (``docker.io`` for Hub), or None for anonymous access."""
        wanted = registry_host(host)
        if wanted in self._cache:
            return self._cache[wanted]
        creds = await self._lookup(wanted)
        self._cache[wanted] = creds
        return creds

    async def _lookup(self, host: str) -> Credentials | None:
        helpers = self._config.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if registry_host(key) == host and isinstance(helper, str) and helper:
                    return await run_helper(helper, server_key(host))
        store = self._config.get("credsStore")
        if isinstance(store, str) and store:
            creds = await run_helper(store, server_key(host))
            if creds is not None:
                return creds
        return self._from_auths(host)

    def _from_auths(self, host: str) -> Credentials | None:
        auths = self._config.get("auths")
        if not isinstance(auths, dict):
            return None
        for key, entry in auths.items():
            if registry_host(key) != host or not isinstance(entry, dict):
                continue
            username, password = entry.get("username"), entry.get("password")
            encoded = entry.get("auth")
            if isinstance(encoded, str) and encoded:
                try:
                    username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    colon = ""
                if not colon:
                    raise CredentialError(f"docker config: auths[{key!r}].auth is not base64 of user:password")
            token = entry.get("identitytoken")
            creds = Credentials(
                username if isinstance(username, str) and username else None,
                password if isinstance(password, str) else None,
                token if isinstance(token, str) and token else None,
            )
            if creds.has_basic or creds.identity_token:
                return creds
        return None


async def run_helper(name: str, server: str) -> Credentials | None:
    """Run ``docker-credential-<name> get``; None when the helper has no entry for ``server``."""
    program = f"docker-credential-{name}"
    try:
        proc = await asyncio.create_subprocess_exec(
            program, "get",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise CredentialError(f"credential helper {program} not found on PATH (configured in docker config)") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(server.encode()), _HELPER_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CredentialError(
            f"credential helper {program} did not answer for {server} in {_HELPER_TIMEOUT:.0f}s"
        ) from None
    if proc.returncode != 0:
        text = (out + err).decode("utf-8", "replace").strip()
        if "credentials not found" in text.lower():
            return None
        raise CredentialError(f"credential helper {program} failed for {server}: {text or f'exit {proc.returncode}'}")
    try:
        doc = json.loads(out)
    except ValueError:
        raise CredentialError(f"credential helper {program} printed invalid JSON for {server}") from None
    if not isinstance(doc, dict):
        raise CredentialError(f"credential helper {program} printed invalid JSON for {server}")
    username, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(secret, str) or not secret:
        return None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username if isinstance(username, str) else None, secret)

"""Helpers for the registry-operations tests: users and passwords, settings from TOML text, and a client
wrapper that sends credentials with every request (so regtools' push helpers work as that user)."""

from __future__ import annotations

import base64
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from lamina.registry.ops import OpsSettings, parse_ops_setting

OpsClient = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "runner": "runner-pw", "root": "root-pw"}


def ops_from_toml(text: str) -> OpsSettings:
    ops = OpsSettings()
    for key, value in tomllib.loads(text).items():
        ops = parse_ops_setting(ops, key, value)
    return ops


def basic(user: str, password: str | None = None) -> dict[str, str]:
    raw = f"{user}:{PASSWORDS[user] if password is None else password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Authed:
    """A TestClient wrapper that adds headers to every request (regtools' helpers take a client)."""

    def __init__(self, client: Any, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def _h(self, kwargs: dict) -> dict:  # type: ignore[type-arg]
        kwargs["headers"] = {**self.headers, **(kwargs.get("headers") or {})}
        return kwargs

    def get(self, *a, **k):  # type: ignore[no-untyped-def]
        return self.client.get(*a, **self._h(k))

    def head(self, *a, **k):  # type: ignore[no-untyped-def]
        return self.client.head(*a, **self._h(k))

    def put(self, *a, **k):  # type: ignore[no-untyped-def]
        return self.client.put(*a, **self._h(k))

    def post(self, *a, **k):  # type: ignore[no-untyped-def]
        return self.client.post(*a, **self._h(k))

    def patch(self, *a, **k):  # type: ignore[no-untyped-def]
        return self.client.patch(*a, **self._h(k))

    def delete(self, *a, **k):  # type: ignore[no-untyped-def]
        return self.client.delete(*a, **self._h(k))



"""Real peers for the client tests: a tiny JWT token issuer we run (the realm of a token-auth CNCF
distribution, which ``helpers.registries.start_distribution`` starts), and a helper to serve small
aiohttp apps on 127.0.0.1 (both in ``helpers.token_issuer``, shared with the builder's tests).

A module of its own (not conftest) so test files can import these names unambiguously."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from helpers.registries import RegistryProcess
from helpers.token_issuer import TokenIssuer, serve

__all__ = ["ServeApp", "TokenIssuer", "TokenRegistry", "serve"]

ServeApp = Callable[[web.Application], Awaitable[str]]  # the serve_app fixture: app -> "127.0.0.1:<port>"


@dataclass
class TokenRegistry:
    registry: RegistryProcess
    issuer: TokenIssuer

"""Fixtures for the client tests: real CNCF distribution registries (plain, htpasswd, token auth), a
loopback server for small fault-injecting aiohttp apps, and a PATH directory for credential helpers.
Distribution is started by ``helpers.registries``; the token issuer lives in ``client_peers.py``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web
from client_peers import ServeApp, TokenIssuer, TokenRegistry, serve

from helpers.binaries import require_binary
from helpers.registries import DISTRIBUTION_BINARY, RegistryProcess, start_distribution


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[RegistryProcess]:
    require_binary(DISTRIBUTION_BINARY, "docker-registry")
    reg = start_distribution(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture
def htpasswd_distribution(tmp_path: Path) -> Iterator[RegistryProcess]:
    """Distribution with Basic auth: user ``alice`` / password ``wonderland``."""
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"alice:{hashed}\n")
    require_binary(DISTRIBUTION_BINARY, "docker-registry")
    reg = start_distribution(tmp_path / "registry", auth={"htpasswd": {"realm": "lamina-test", "path": str(path)}})
    yield reg
    reg.stop()


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Start aiohttp apps on 127.0.0.1 free ports; each call returns ``host:port``."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        host, runner = await serve(app)
        runners.append(runner)
        return host

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def token_registry(tmp_path: Path, serve_app: ServeApp) -> AsyncIterator[TokenRegistry]:
    """Distribution with token auth whose realm is our issuer: ``bob`` / ``builder``, refresh token ``rt-bob``."""
    issuer = TokenIssuer(users={"bob": "builder"}, refresh_tokens={"rt-bob": "bob"})
    issuer.host = await serve_app(issuer.app())
    bundle = tmp_path / "issuer.pem"
    issuer.write_bundle(bundle)
    auth = {"token": {"realm": f"http://{issuer.host}/token", "service": issuer.service, "issuer": issuer.issuer,
                      "rootcertbundle": str(bundle)}}
    require_binary(DISTRIBUTION_BINARY, "docker-registry")
    reg = start_distribution(tmp_path / "registry", auth=auth)
    yield TokenRegistry(reg, issuer)
    reg.stop()


@pytest.fixture
def helper_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory put first on PATH, for ``docker-credential-*`` scripts written by tests."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")
    return bindir

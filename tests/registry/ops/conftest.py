"""Fixtures for the registry-operations tests: the real app (with ops settings from TOML text) on a
loopback test server, and an htpasswd file with fast bcrypt hashes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opstools import PASSWORDS, OpsClient, ops_from_toml

from lamina.registry.app import create_app
from lamina.registry.config import RegistryConfig


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
             for user, pw in PASSWORDS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def make_ops_client(tmp_path: Path) -> AsyncIterator[OpsClient]:
    """``await make_ops_client(toml_text, **core_settings)``: a client of a fresh registry with those settings."""
    clients: list[TestClient] = []  # type: ignore[type-arg]

    async def make(text: str = "", root: Path | None = None, **settings: Any) -> TestClient:  # type: ignore[type-arg]
        ops = ops_from_toml(text)
        config = dataclasses.replace(RegistryConfig(root=root or tmp_path / "root", run_janitor=False), **settings)
        app = create_app(dataclasses.replace(config, ops=ops))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()

"""Fixtures for HTTP-level registry tests: the real app on a loopback aiohttp test server with a real
storage root under tmp_path, plus small helpers that push blobs and manifests the way clients do."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from regtools import Client

from lamina.registry.app import create_app
from lamina.registry.config import RegistryConfig

MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[MakeClient]:
    """``await make_client(**settings)``: a client of a fresh registry (settings override RegistryConfig)."""
    clients: list[Client] = []

    async def make(root: Path | None = None, **settings: Any) -> Client:
        config = dataclasses.replace(
            RegistryConfig(root=root or tmp_path / "root", run_janitor=False), **settings
        )
        client = TestClient(TestServer(create_app(config), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()

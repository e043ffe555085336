"""Fixtures for the registry-operations tests: the real app (with ops settings from TOML text) on a
loopback test server (through the parent conftest's ``make_client``), and an htpasswd file with fast
bcrypt hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient
from opstools import PASSWORDS, OpsClient, ops_from_toml


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
             for user, pw in PASSWORDS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_ops_client(make_client: OpsClient) -> OpsClient:  # make_client has the same type
    """``await make_ops_client(toml_text, **core_settings)``: a client of a fresh registry with those settings
    (``make_client`` of tests/registry/conftest.py starts it and closes it after the test)."""

    async def make(text: str = "", root: Path | None = None, **settings: Any) -> TestClient:  # type: ignore[type-arg]
        return await make_client(root, ops=ops_from_toml(text), **settings)

    return make

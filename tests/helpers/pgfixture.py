"""The session's PostgreSQL server, a pytest fixture (imported by tests/conftest.py).

Started on first use by a test that asks for it (scripts/services/postgres.sh, without fsync: tests
need speed, not durability) and stopped at the end of the session. Skips when Debian's postgresql-15 is
missing, which fails the run in CI (helpers.ciskips): CI installs it (scripts/install-system-deps.sh).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .postgres import PostgresServer, available, start_postgres

__all__ = ["postgres_server"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if not available():
        pytest.skip("PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin): run scripts/install-system-deps.sh")
    server = start_postgres(fast=True)
    try:
        yield server
    finally:
        server.stop()

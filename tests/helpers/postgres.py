"""A throwaway PostgreSQL 15 server for tests and benchmarks, and scratch databases on it.

The server is started and stopped by ``scripts/services/postgres.sh`` (one implementation for tests,
benchmarks and people): inside a temp dir under /tmp, on a free loopback port, trusting local
connections. :func:`scratch_database` creates a fresh database per test (``CREATE DATABASE`` from a
template that already holds lamina's schema, so a test's store starts migrated and empty) and drops it
afterwards.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["POSTGRES_BIN", "PostgresServer", "available", "scratch_database", "start_postgres"]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "postgres.sh"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin/postgres")
TEMPLATE = "lamina_template"


def available() -> bool:
    """Whether Debian's postgresql-15 is installed (scripts/install-system-deps.sh installs it)."""
    return POSTGRES_BIN.exists()


@dataclass
class PostgresServer:
    directory: Path
    url: str  # postgresql://postgres@127.0.0.1:PORT/postgres

    def database_url(self, name: str) -> str:
        return with_database(self.url, name)

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory)], check=True, capture_output=True,
                       timeout=60)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def start_postgres(*, fast: bool = True) -> PostgresServer:
    """Start a server (``fast``: without fsync, for tests); RuntimeError with the script's output."""
    argv = ["bash", str(SCRIPT), "start", *(["--fast"] if fast else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"postgres.sh start failed ({done.returncode}): {done.stderr.strip()}")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return PostgresServer(Path(values["LAMINA_PG_DIR"]), values["LAMINA_PG_URL"])


def _admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _ensure_template(url: str) -> None:
    """A database holding lamina's migrated, empty schema, copied by CREATE DATABASE ... TEMPLATE."""
    import psycopg

    from lamina.store.postgres import PostgresMetadataStore

    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,)).fetchone():
            return
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    store = PostgresMetadataStore(with_database(url, TEMPLATE))
    store.create_schema()
    store.close()


@contextmanager
def scratch_database(url: str, *, migrated: bool = True, drop: bool = True) -> Iterator[str]:
    """A new, empty database on the server at ``url`` (migrated, unless ``migrated`` is False); its URL.
    Dropped afterwards (closing any connection still open to it) unless ``drop`` is False: tests on a
    throwaway server skip the ~0.5 s a drop costs, the server's directory goes at the end anyway."""
    name = f"lamina_{uuid.uuid4().hex[:12]}"
    if migrated:
        _ensure_template(url)
        _admin(url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    else:
        _admin(url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    finally:
        if drop:
            _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

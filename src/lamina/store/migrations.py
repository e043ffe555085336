"""Versioned schema migrations for the PostgreSQL metadata store.

A ``schema_version`` table records every migration applied (version, what it did, when). At start-up
:func:`migrate` runs, in one transaction holding a transaction-level advisory lock, every migration
newer than the highest recorded version, in order, and records each. PostgreSQL's DDL is transactional,
so a migration applies whole or not at all; the lock makes replicas that start at once wait for the
first and then find nothing left to do. A database recorded at a version newer than this lamina knows
is refused (an older replica must not write a schema it does not understand).

Adding a migration: append ``(version + 1, "what it does", statements)`` to :data:`MIGRATIONS`, built
from :mod:`lamina.store.schema` / SQLAlchemy Core like every other statement. (The SQLite store keeps
its own scheme: ``PRAGMA user_version`` and column checks, see :mod:`lamina.store.sqlite`.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .base import StoreError
from .statements import POSTGRESQL, advisory_locks, ddl, migration_statements

__all__ = ["MIGRATIONS", "MIGRATION_LOCK_KEY", "latest_version", "migrate"]

MIGRATION_LOCK_KEY = 0x6C616D696E610001  # "lamina" + 1: the advisory lock migrations run under


def _initial() -> list[str]:
    tables, indexes = ddl(POSTGRESQL, exclude=("login_failures",))
    return [*tables, *indexes]


def _login_failures() -> list[str]:
    tables, indexes = ddl(POSTGRESQL, only=("login_failures",))
    return [*tables, *indexes]


# (version, description, statements): applied in order, each exactly once per database
MIGRATIONS: list[tuple[int, str, Callable[[], list[str]]]] = [
    (1, "tables and indexes of lamina metadata schema 2 (repositories, links, manifests, tags, uploads, checks)",
     _initial),
    (2, "login_failures: failed-login counters shared by replicas (were a file per host)", _login_failures),
]

_SQL = migration_statements()


def latest_version() -> int:
    return MIGRATIONS[-1][0]


def migrate(conn: Any, describe: str) -> list[int]:
    """Bring the database on ``conn`` (a psycopg connection in autocommit mode) up to date; the versions
    applied now (empty when another replica did it first). StoreError when the database is newer."""
    applied: list[int] = []
    with conn.transaction():
        lock = advisory_locks(None, 1)
        conn.execute(lock.sql, lock.bind(k0=MIGRATION_LOCK_KEY))
        conn.execute(_SQL.create_table)
        current = int(conn.execute(_SQL.current.sql, _SQL.current.bind()).fetchone()[0])
        if current > latest_version():
            raise StoreError(
                f"metadata database {describe} has schema version {current}, newer than this lamina "
                f"({latest_version()}); upgrade lamina"
            )
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements():
                conn.execute(statement)
            conn.execute(_SQL.record.sql, _SQL.record.bind(version=version, description=description,
                                                           applied_at=time.time()))
            applied.append(version)
    return applied

"""Registry metadata in PostgreSQL: the primitives of :mod:`.sqlcore` over psycopg 3 and a connection
pool; the roles' logic is :mod:`.sqlrequests` and :mod:`.sqlmaintenance`, the SQL :mod:`.statements`.

Why psycopg 3 (sync, ``psycopg[binary]``) and ``psycopg_pool``: the store's API is synchronous (routes
call it from worker threads), and on the 2-core CI VM over loopback psycopg's C implementation answered
an indexed SELECT in ~95-105 us and a two-statement transaction in ~355-540 us, asyncpg in ~130-180 us
and ~490-690 us (asyncpg would also need an event loop per thread); pure-Python psycopg ~185 us.

Transactions run in READ COMMITTED (PostgreSQL's default) and get the guarantees SQLite's single writer
gives from locks, taken first in each write transaction in one round trip (:func:`.statements.advisory_locks`):

- the **GC gate**, a transaction-level advisory lock: manifest PUTs and link creation with a file check
  take it shared (they never wait for each other), garbage collection's phases and fsck's repairs take
  it exclusive — so a link can neither vanish under a manifest PUT's reference check nor be created
  for a blob a sweep is deleting;
- **per-name locks** (advisory, keyed by a 64-bit hash of the name): one per tag being moved (an
  immutable tag or an ``If-Match`` condition is checked against the digest the move replaces; of two
  conditioned writers only one wins), one per repository and user counting upload sessions;
- **row locks** in the statements themselves: ``FOR SHARE`` on the links and child manifests a PUT
  checked, ``FOR UPDATE`` on a link being unlinked and a manifest lifecycle deletes.

A transaction PostgreSQL aborts to break a deadlock or a serialization conflict, or a foreign-key race
(a tag moved onto a manifest deleted meanwhile), is run again from the start (a few times).

Connections: one pool per process, opened on first use; a forked worker opens its own and leaves the
parent's untouched (never closed from the child, whose copies of its sockets belong to the parent).
Whole-registry reads run in a ``REPEATABLE READ, READ ONLY`` transaction: one snapshot.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .base import StoreError
from .leases import Lease, postgres_lease
from .migrations import migrate
from .sqlcore import Gate
from .sqllogins import LoginQueries
from .sqlmaintenance import MaintenanceQueries
from .sqlrequests import RequestQueries
from .statements import POSTGRESQL, SNAPSHOT_ISOLATION, Compiled, advisory_locks, compile_statements

__all__ = ["GC_GATE_KEY", "PostgresMetadataStore", "check_url", "lock_key"]

T = TypeVar("T")
GC_GATE_KEY = 0x6C616D696E610002  # "lamina" + 2 (migrations use + 1)


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (collisions only make two names share a lock)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def check_url(url: str) -> str:
    """``url`` if it is a ``postgresql://USER@HOST:PORT/DB`` URL; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"metadata: {url!r} is not a postgresql://USER@HOST:PORT/DB URL")
    if not parts.path.strip("/"):
        raise ValueError(f"metadata: {_redact(url)!r} names no database: use postgresql://USER@HOST:PORT/DB")
    return url


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresMetadataStore(RequestQueries, MaintenanceQueries, LoginQueries):
    """Every metadata role (:class:`lamina.store.roles.MetadataStore`) over one PostgreSQL database,
    shared by every worker process and every replica."""

    sql = compile_statements(POSTGRESQL)
    integrity_errors = (psycopg.errors.IntegrityError,)
    retry_errors = (
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.ForeignKeyViolation,
    )

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        pull_granularity: float = 60.0,
    ) -> None:
        self.url = check_url(url)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.pull_granularity = pull_granularity
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._pid = 0
        self._inherited: list[ConnectionPool] = []  # a forked parent's pools: referenced, never closed

    def describe(self) -> str:
        return _redact(self.url)

    def maintenance_lease(self, job: str) -> AbstractContextManager[Lease]:
        """A session advisory lock on a connection of its own (:mod:`.leases`): one job across replicas."""
        return postgres_lease(self.url, job, describe=self.describe(), connect_timeout=self.connect_timeout)

    # -- connections --------------------------------------------------------------------------------

    def _pool_here(self) -> ConnectionPool:
        pool, pid = self._pool, os.getpid()
        if pool is not None and self._pid == pid:
            return pool
        with self._lock:
            if self._pool is not None and self._pid == pid:
                return self._pool
            if self._pool is not None:
                self._inherited.append(self._pool)
            pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(self.connect_timeout))},
                timeout=self.connect_timeout,
                open=False,
                name=f"lamina-metadata-{pid}",
            )
            try:
                pool.open(wait=True, timeout=self.connect_timeout)
            except PoolTimeout as exc:
                pool.close()
                raise StoreError(
                    f"metadata database {self.describe()}: no connection within {self.connect_timeout:g} s "
                    "(is the server running and the URL right?)"
                ) from exc
            self._pool, self._pid = pool, pid
            return pool

    def close(self) -> None:
        """Close this process's pool; the next call opens a new one."""
        with self._lock:
            pool = self._pool if self._pid == os.getpid() else None
            self._pool = None if pool is not None else self._pool
        if pool is not None:
            pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool_here().connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreError(f"metadata database {self.describe()}: every pooled connection busy or the "
                             f"server unreachable for {self.connect_timeout:g} s") from exc

    def create_schema(self) -> None:
        """Apply pending migrations (:mod:`.migrations`); safe when replicas start at once. On a connection
        of its own (not the pool, which would retry quietly): an unreachable server is one error at once."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))) as conn:
                migrate(conn, self.describe())
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"metadata database {self.describe()}: {first}") from exc

    # -- the primitives of sqlcore ------------------------------------------------------------------

    def _fetch(self, query: Compiled, **values: Any) -> list[Any]:
        try:
            with self._connection() as conn:
                return conn.execute(query.sql, query.bind(**values)).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"metadata database {self.describe()}: {exc}") from exc

    @contextmanager
    def _transaction(self, *, gate: Gate = None, keys: Sequence[str] = ()) -> Iterator[psycopg.Connection[Any]]:
        passthrough = self.retry_errors + self.integrity_errors
        try:
            with self._connection() as conn, conn.transaction():
                if gate is not None or keys:
                    ordered = sorted({lock_key(key) for key in keys})
                    lock = advisory_locks(gate, len(ordered))
                    values: dict[str, int] = {f"k{n}": key for n, key in enumerate(ordered)}
                    if gate is not None:
                        values["gate"] = GC_GATE_KEY
                    conn.execute(lock.sql, lock.bind(**values))
                yield conn
        except passthrough:
            raise
        except psycopg.Error as exc:
            raise StoreError(f"metadata database {self.describe()}: {exc}") from exc

    def _exec_many(self, conn: Any, query: Compiled, rows: list[Any]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(query.sql, rows)

    def _snapshot(self, fn: Callable[[Any], T]) -> T:
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute(SNAPSHOT_ISOLATION)
                return fn(conn)
        except psycopg.Error as exc:
            raise StoreError(f"metadata database {self.describe()}: {exc}") from exc

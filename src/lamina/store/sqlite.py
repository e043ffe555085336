"""Registry metadata in SQLite: the primitives of :mod:`.sqlcore` over Python's sqlite3 module; the
roles' logic is :mod:`.sqlrequests` and :mod:`.sqlmaintenance`, the SQL :mod:`.statements`.

Why these settings: several worker processes share one database file, so it runs in WAL mode (readers
never block the writer), every connection waits ``busy_timeout`` for the write lock instead of failing, and
every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write transaction can never hit
SQLITE_BUSY halfway (the validation in :meth:`put_manifest` reads, then writes). ``synchronous`` defaults
to FULL (a committed push survives power loss); NORMAL is faster and still never corrupts under WAL, but
the last transactions may roll back after a power cut.

Connections: one sqlite3 connection per thread, opened on first use and kept (autocommit mode; writes
open their own ``BEGIN IMMEDIATE`` transaction). Reads are single statements, atomic on their own, so a
manifest GET or blob-link lookup is one indexed query with no BEGIN and no pool checkout. Statements are
compiled once by SQLAlchemy (:mod:`.statements` says why they are not executed through it). Every write
transaction is ``BEGIN IMMEDIATE``, so the GC gate and per-name locks of :mod:`.sqlcore` are implied.
Whole-registry reads (console, metrics, fsck) run on a separate read-only connection in one read
transaction, so a long listing never holds a request thread's connection nor blocks a writer.

Fork safety: every connection remembers the process that opened it; in a forked child each thread opens
its own on first use and the parent's are left untouched (never closed by the child), so a store opened
before the server forks its workers is safe in every worker without any call. ``close()`` closes this
process's connections; the next call opens again.

Methods are synchronous and short; a write transaction waits for fsync under FULL, so async callers may
prefer ``asyncio.to_thread`` for writes (the store is thread-safe).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from lamina.sqlitewal import switch_to_wal

from .base import StoreError
from .leases import Lease, file_lease
from .schema import SCHEMA_VERSION
from .sqlcore import Gate
from .sqllogins import LoginQueries
from .sqlmaintenance import MaintenanceQueries
from .sqlrequests import RequestQueries
from .statements import SQLITE, Compiled, compile_statements, ddl

__all__ = ["SYNCHRONOUS_MODES", "SqliteMetadataStore"]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


T = TypeVar("T")
_SQL = compile_statements(SQLITE)
_TABLE_DDL, _INDEX_DDL = ddl(SQLITE)


class SqliteMetadataStore(RequestQueries, MaintenanceQueries, LoginQueries):
    """Every metadata role (:class:`lamina.store.roles.MetadataStore`) over one SQLite file shared by
    every worker process."""

    sql = _SQL
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        pull_granularity: float = 60.0,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"invalid SQLite synchronous mode {synchronous!r}: use one of {SYNCHRONOUS_MODES}")
        self.path = Path(path)
        self.synchronous = mode
        self.busy_timeout = busy_timeout
        # record_pull writes only when the stored time is older than this, so pulls stay read-only.
        self.pull_granularity = pull_granularity
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's connection
        self._epoch = 0  # bumped by close(): connections of an older epoch are reopened
        self._opened: list[tuple[int, sqlite3.Connection]] = []  # (pid, connection), for close()
        self._inherited: list[sqlite3.Connection] = []  # a forked parent's: referenced, never closed

    # -- connections and transactions -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        pid = os.getpid()
        if conn is not None and local.pid == pid and local.epoch == self._epoch:
            return conn
        if conn is not None and local.pid != pid:
            self._inherited.append(conn)
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc
        with self._lock:
            self._opened.append((pid, conn))
        local.conn, local.pid, local.epoch = conn, pid, self._epoch
        return conn

    def close(self) -> None:
        """Close this process's connections; the next call opens the database again."""
        with self._lock:
            self._epoch += 1
            mine = [conn for pid, conn in self._opened if pid == os.getpid()]
            self._opened = [(pid, conn) for pid, conn in self._opened if pid != os.getpid()]
        for conn in mine:
            conn.close()

    def describe(self) -> str:
        return str(self.path)

    def maintenance_lease(self, job: str) -> contextlib.AbstractContextManager[Lease]:
        """A flock on ``<job>.lock`` beside the database (:mod:`.leases`): one host, one registry."""
        return file_lease(self.path.parent, job)

    def _fetch(self, query: Compiled, **values: Any) -> list[Any]:
        """Run one read statement (atomic on its own: no BEGIN needed) and return its rows."""
        try:
            return self._connection().execute(query.sql, query.bind(**values)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self, *, gate: Gate = None, keys: Sequence[str] = ()) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (the one write lock: ``gate`` and ``keys`` are implied);
        rolled back on any exception. IntegrityError passes through."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:  # locked past busy_timeout, disk full, not a database, ...
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    def _write(self, fn: Callable[[Any], T], *, gate: Gate = None, keys: Sequence[str] = ()) -> T:
        with self._transaction() as conn:  # SQLite never aborts a transaction to break a deadlock
            return fn(conn)

    def _exec_many(self, conn: Any, query: Compiled, rows: list[Any]) -> None:
        conn.executemany(query.sql, rows)

    def _snapshot(self, fn: Callable[[Any], T]) -> T:
        """``fn`` on a fresh read-only connection inside one read transaction (one consistent view)."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.busy_timeout,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc
        try:
            conn.execute("BEGIN")
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc
        finally:
            conn.close()

    def _consistency_errors(self, conn: Any) -> list[str]:
        """SQLite's ``PRAGMA quick_check`` findings (none: the database file is sound)."""
        return [str(row[0]) for row in conn.execute("PRAGMA quick_check") if str(row[0]) != "ok"]

    def _enable_wal(self) -> None:
        try:
            switch_to_wal(self._connection(), self.busy_timeout)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    def create_schema(self) -> None:
        """Switch to WAL and create missing tables/indexes; idempotent and safe when processes race."""
        self._enable_wal()
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"metadata database {self.path} has schema version {version}, newer than this lamina "
                    f"({SCHEMA_VERSION}); upgrade lamina"
                )
            for statement in _TABLE_DDL:
                conn.execute(statement)
            self._migrate(conn)
            for statement in _INDEX_DDL:
                conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Bring an older database's tables up to :data:`SCHEMA_VERSION` (by their columns, so a
        migration another process finished first is skipped): 1 -> 2 adds ``upload_sessions.user``."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(upload_sessions)")}
        if "user" not in columns:
            conn.execute("ALTER TABLE upload_sessions ADD COLUMN user VARCHAR(255)")

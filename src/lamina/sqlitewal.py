"""SQLite's WAL mode switched on safely when several processes open a new database file at once: the
builder's local cache index (two builds on one state dir) and the registry's metadata (its workers)."""

from __future__ import annotations

import sqlite3
import time

__all__ = ["switch_to_wal"]


def switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch ``conn``'s database to WAL. SQLite answers "database is locked" at once, without its busy
    handler, when another process is switching the same fresh file at that moment (it refuses a lock
    escalation in rollback mode rather than deadlock), so retry with backoff for up to ``timeout``
    seconds; other errors propagate. Once in WAL mode, writers wait on the busy timeout as usual."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)

"""Failed-login limits: per user and client address, and per client address alone, with exponential backoff.

Why a small SQLite file (``ROOT/run/login-failures.db``) rather than memory: the registry's worker
processes share the port, so each connection may land on any of them; counters kept per process would
give an attacker ``workers`` times the allowance. The file is the limiter's own (not the metadata
database: nothing outside the store backend opens that), in WAL mode, written only on a failure and
read once per Basic check (a primary-key lookup, tens of microseconds).

A key (``user`` at ``address``, or ``address`` alone) counts failures in a fixed window. Reaching the
limit locks the key for ``lockout_seconds``, doubled at every further lockout up to
``max_lockout_seconds``; the doubling is forgotten once the key has had no failure for
``max_lockout_seconds`` after its last lockout ended. While a key is locked no password is checked at
all: every attempt answers 429 with ``Retry-After``, the right password included (or the lockout
would still tell an attacker when a guess is right). Unknown users are counted like known ones, so the
limiter tells nothing about which names exist. The table never holds more than ``max_tracked`` keys:
forgotten keys are dropped first, then the least recently failed, so an attacker rotating usernames
cannot grow it without bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lamina.store.sqlite import switch_to_wal

__all__ = ["LoginLimiter", "LoginLimits"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,          -- SHA-256 of "user\\0address" or "\\0address" (fixed size)
    failures INTEGER NOT NULL,     -- failures counted in the current window
    window_start REAL NOT NULL,    -- wall-clock seconds: shared by every worker process
    locked_until REAL NOT NULL,
    strikes INTEGER NOT NULL,      -- lockouts so far: the backoff's exponent
    last_failure REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_by_age ON failures(last_failure);
"""


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """``[auth.failed_logins]``: see docs/registry.md."""

    max_failures: int = 10  # per user and client address within one window
    max_failures_per_address: int = 100  # per client address, whatever the usernames
    window_seconds: float = 60.0
    lockout_seconds: float = 60.0  # the first lockout; doubles at each further one
    max_lockout_seconds: float = 900.0
    max_tracked: int = 10000  # keys remembered at most (memory and disk bound)


@dataclass(frozen=True, slots=True)
class _Row:
    failures: int
    window_start: float
    locked_until: float
    strikes: int
    last_failure: float


class LoginLimiter:
    """Counts failed logins in ``path`` (created on first use); safe across threads and processes."""

    def __init__(self, path: Path, limits: LoginLimits, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.limits = limits
        self.clock = clock
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # private; SQLite gives -wal/-shm the same mode
        with self._connection() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            switch_to_wal(db, timeout=10.0)  # workers opening a fresh file at once: retried, not fatal
            db.execute("PRAGMA synchronous=NORMAL")  # counters, not data: a power cut may forget a few
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        yield db

    @staticmethod
    def _keys(user: str, address: str) -> tuple[str, str]:
        """Fixed-size keys (a username can be kilobytes long): SHA-256 of ``user\0address`` and ``\0address``."""
        return (hashlib.sha256(f"{user}\0{address}".encode()).hexdigest(),
                hashlib.sha256(f"\0{address}".encode()).hexdigest())

    def retry_after(self, user: str, address: str) -> int:
        """Whole seconds until ``user`` may try again from ``address``; 0 when not locked."""
        now = self.clock()
        with self._connection() as db:
            row = db.execute(
                "SELECT MAX(locked_until) FROM failures WHERE key IN (?, ?)", self._keys(user, address)
            ).fetchone()
        until = row[0] if row and row[0] is not None else 0.0
        return math.ceil(until - now) if until > now else 0

    def record_failure(self, user: str, address: str) -> int:
        """Count one failed login; the lockout in whole seconds if it started one (else 0)."""
        now = self.clock()
        pair, alone = self._keys(user, address)
        limits = self.limits
        started = 0
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for key, limit in ((pair, limits.max_failures), (alone, limits.max_failures_per_address)):
                    row = self._advance(self._row(db, key), now)
                    failures, locked_until, strikes = row.failures + 1, row.locked_until, row.strikes
                    window_start = row.window_start
                    if failures >= limit:
                        lockout = min(limits.lockout_seconds * 2.0**strikes, limits.max_lockout_seconds)
                        locked_until, strikes, failures, window_start = now + lockout, strikes + 1, 0, now
                        started = max(started, math.ceil(lockout))
                    db.execute(
                        "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                        (key, failures, window_start, locked_until, strikes, now),
                    )
                self._bound(db, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return started

    def tracked(self) -> int:
        """How many keys the table holds now."""
        with self._connection() as db:
            return int(db.execute("SELECT COUNT(*) FROM failures").fetchone()[0])

    def _row(self, db: sqlite3.Connection, key: str) -> _Row | None:
        found = db.execute(
            "SELECT failures, window_start, locked_until, strikes, last_failure FROM failures WHERE key = ?", (key,)
        ).fetchone()
        return _Row(*found) if found else None

    def _advance(self, row: _Row | None, now: float) -> _Row:
        """``row`` as of ``now``: a new window when the old one is over; no strikes when quiet long enough."""
        if row is None:
            return _Row(0, now, 0.0, 0, now)
        failures, window_start, strikes = row.failures, row.window_start, row.strikes
        if now - window_start >= self.limits.window_seconds:
            failures, window_start = 0, now
        if now - max(row.last_failure, row.locked_until) > self.limits.max_lockout_seconds:
            strikes = 0
        return _Row(failures, window_start, row.locked_until, strikes, row.last_failure)

    def _bound(self, db: sqlite3.Connection, now: float) -> None:
        """Keep at most ``max_tracked`` keys: drop forgotten ones, then the least recently failed."""
        count = int(db.execute("SELECT COUNT(*) FROM failures").fetchone()[0])
        if count <= self.limits.max_tracked:
            return
        quiet = now - self.limits.max_lockout_seconds
        db.execute(
            "DELETE FROM failures WHERE locked_until < ? AND last_failure < ? AND MAX(last_failure, locked_until) < ?",
            (now, now - self.limits.window_seconds, quiet),
        )
        count = int(db.execute("SELECT COUNT(*) FROM failures").fetchone()[0])
        if count > self.limits.max_tracked:
            db.execute(
                "DELETE FROM failures WHERE key IN (SELECT key FROM failures ORDER BY last_failure LIMIT ?)",
                (count - self.limits.max_tracked,),
            )

    def close(self) -> None:
        """Close every thread's connection (at shutdown, when no check runs any more)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        self._local = threading.local()

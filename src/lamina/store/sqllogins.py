"""The failed-login counters role (:class:`lamina.store.roles.LoginFailures`) over any SQL backend's
primitives (:mod:`.sqlcore`).

Why in the metadata database: the limiter (:mod:`lamina.registry.auth.limits`) must count one client's
failures wherever its connections land — on any worker process of a host, and with PostgreSQL metadata
on any replica — or an attacker gets the allowance once per process. The policy (windows, backoff,
lockouts) is the limiter's; this role only reads and writes its rows atomically: a failure is counted
under a lock per key (SQLite: the one write lock; PostgreSQL: advisory locks on the keys), so two
replicas counting the same key at once never lose a count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .sqlcore import SqlCore
from .views import LoginRow, LoginTrim

__all__ = ["LoginQueries"]


class LoginQueries(SqlCore):
    """LoginFailures (:mod:`.roles`)."""

    def login_locked_until(self, keys: Sequence[str]) -> float:
        first, second = (list(keys) + list(keys))[:2]  # one or two keys: the statement takes two
        row = self._fetch_one(self.sql.login_locked_until, key_a=first, key_b=second)
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def record_login_failures(
        self, keys: Sequence[str], change: Callable[[str, LoginRow | None], LoginRow], trim: LoginTrim
    ) -> None:
        sql = self.sql

        def run(conn: Any) -> None:
            for key in keys:
                found = self._exec(conn, sql.login_row, key=key).fetchone()
                row = change(key, LoginRow(*found) if found is not None else None)
                self._exec(conn, sql.login_upsert, key=key, failures=row.failures, window_start=row.window_start,
                           locked_until=row.locked_until, strikes=row.strikes, last_failure=row.last_failure)
            count = int(self._exec(conn, sql.login_count).fetchone()[0])
            if count <= trim.max_tracked:
                return
            self._exec(conn, sql.login_forget, now=trim.now, window_cutoff=trim.window_cutoff,
                       quiet_cutoff=trim.quiet_cutoff)
            count = int(self._exec(conn, sql.login_count).fetchone()[0])
            if count > trim.max_tracked:
                self._exec(conn, sql.login_drop_oldest, excess=count - trim.max_tracked)

        self._write(run, keys=[f"login\0{key}" for key in keys])

    def login_failures_tracked(self) -> int:
        return int(self._fetch(self.sql.login_count)[0][0])

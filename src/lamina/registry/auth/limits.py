"""Failed-login limits: per user and client address, and per client address alone, with exponential backoff.

Why the counters live in the metadata store (the :class:`lamina.store.roles.LoginFailures` role, table
``login_failures``) rather than memory: the registry's worker processes share the port, and with
PostgreSQL metadata several replicas share the traffic, so each connection may land anywhere; counters
kept per process would give an attacker ``workers`` (times replicas) the allowance. They are written
only on a failure and read once per Basic check (a primary-key lookup).

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

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from lamina.store.roles import LoginFailures
from lamina.store.views import LoginRow, LoginTrim

__all__ = ["LoginLimiter", "LoginLimits"]


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """``[auth.failed_logins]``: see docs/registry.md."""

    max_failures: int = 10  # per user and client address within one window
    max_failures_per_address: int = 100  # per client address, whatever the usernames
    window_seconds: float = 60.0
    lockout_seconds: float = 60.0  # the first lockout; doubles at each further one
    max_lockout_seconds: float = 900.0
    max_tracked: int = 10000  # keys remembered at most (memory and disk bound)


class LoginLimiter:
    """The limiter's policy over the counters of ``store()`` (called at each use: the registry opens its
    storage after the app is built); safe across threads, processes and replicas."""

    def __init__(
        self, store: Callable[[], LoginFailures], limits: LoginLimits, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock

    @staticmethod
    def _keys(user: str, address: str) -> tuple[str, str]:
        """Fixed-size keys (a username can be kilobytes long): SHA-256 of ``user\\0address`` and ``\\0address``."""
        return (hashlib.sha256(f"{user}\0{address}".encode()).hexdigest(),
                hashlib.sha256(f"\0{address}".encode()).hexdigest())

    def retry_after(self, user: str, address: str) -> int:
        """Whole seconds until ``user`` may try again from ``address``; 0 when not locked."""
        now = self.clock()
        until = self.store().login_locked_until(self._keys(user, address))
        return math.ceil(until - now) if until > now else 0

    def record_failure(self, user: str, address: str) -> int:
        """Count one failed login; the lockout in whole seconds if it started one (else 0)."""
        now = self.clock()
        pair, alone = self._keys(user, address)
        limits = self.limits
        limit_of = {pair: limits.max_failures, alone: limits.max_failures_per_address}
        started = [0]

        def change(key: str, current: LoginRow | None) -> LoginRow:
            row = self._advance(current, now)
            failures, locked_until, strikes, window_start = row.failures + 1, row.locked_until, row.strikes, \
                row.window_start
            if failures >= limit_of[key]:
                lockout = min(limits.lockout_seconds * 2.0**strikes, limits.max_lockout_seconds)
                locked_until, strikes, failures, window_start = now + lockout, strikes + 1, 0, now
                started[0] = max(started[0], math.ceil(lockout))
            return LoginRow(failures, window_start, locked_until, strikes, now)

        trim = LoginTrim(limits.max_tracked, now, now - limits.window_seconds, now - limits.max_lockout_seconds)
        self.store().record_login_failures((pair, alone), change, trim)
        return started[0]

    def tracked(self) -> int:
        """How many keys the table holds now."""
        return self.store().login_failures_tracked()

    def _advance(self, row: LoginRow | None, now: float) -> LoginRow:
        """``row`` as of ``now``: a new window when the old one is over; no strikes when quiet long enough."""
        if row is None:
            return LoginRow(0, now, 0.0, 0, now)
        failures, window_start, strikes = row.failures, row.window_start, row.strikes
        if now - window_start >= self.limits.window_seconds:
            failures, window_start = 0, now
        if now - max(row.last_failure, row.locked_until) > self.limits.max_lockout_seconds:
            strikes = 0
        return LoginRow(failures, window_start, row.locked_until, strikes, row.last_failure)

"""The LoginFailures role (failed-login counters) on every metadata backend: what the limiter of
lamina.registry.auth.limits writes is what any worker or replica reads, and concurrent failures on one key
are all counted (no lost update between two replicas reading the same row)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from contract_helpers import MetadataFactory

from lamina.registry.auth.limits import LoginLimiter, LoginLimits
from lamina.store.views import LoginRow, LoginTrim

FORK = multiprocessing.get_context("fork")
NOW = 1_000_000.0


def test_counters_round_trip_and_stay_bounded(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    assert store.login_locked_until(["a", "b"]) == 0.0 and store.login_failures_tracked() == 0
    seen: list[tuple[str, LoginRow | None]] = []

    def change(key: str, row: LoginRow | None) -> LoginRow:
        seen.append((key, row))
        failures = 1 if row is None else row.failures + 1
        return LoginRow(failures, NOW, NOW + 60.0 * (key == "a"), 0, NOW)

    keep = LoginTrim(max_tracked=10, now=NOW, window_cutoff=NOW - 60, quiet_cutoff=NOW - 900)
    store.record_login_failures(["a", "b"], change, keep)
    store.record_login_failures(["a", "b"], change, keep)
    assert seen[:2] == [("a", None), ("b", None)]
    assert seen[2] == ("a", LoginRow(1, NOW, NOW + 60, 0, NOW))
    assert store.login_locked_until(["a", "b"]) == NOW + 60 and store.login_locked_until(["b"]) == NOW
    assert store.login_failures_tracked() == 2

    def old(key: str, row: LoginRow | None) -> LoginRow:
        return LoginRow(1, 0.0, 0.0, 0, float(key.removeprefix("old-")))

    for n in range(12):  # a dozen keys forgotten long ago: trimmed down to max_tracked, oldest first
        store.record_login_failures([f"old-{n}"], old, LoginTrim(1000, NOW, NOW - 60, NOW - 900))
    later = NOW + 10_000.0
    store.record_login_failures(["c"], lambda key, row: LoginRow(1, later, later + 60, 1, later),
                                LoginTrim(max_tracked=3, now=later, window_cutoff=later - 60, quiet_cutoff=later - 900))
    assert store.login_failures_tracked() == 1  # every other key was forgotten: quiet for longer than 900 s
    assert store.login_locked_until(["c"]) == later + 60
    for n in range(5):  # keys that are not forgettable yet: the least recently failed go first
        store.record_login_failures([f"new-{n}"], lambda key, row, n=n: LoginRow(1, later, 0.0, 0, later - 50 + n),
                                    LoginTrim(max_tracked=3, now=later, window_cutoff=later - 60,
                                              quiet_cutoff=later - 900))
    assert store.login_failures_tracked() == 3  # "c" and the two newest: the oldest went first
    assert store.login_locked_until(["c"]) == later + 60


def _fail_many(factory: MetadataFactory, root: Path, barrier: object, lockouts: object) -> None:
    store = factory(root)
    limiter = LoginLimiter(lambda: store, LoginLimits(max_failures=100, max_failures_per_address=10**6,
                                                      window_seconds=3600), lambda: NOW)
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(25):
        if limiter.record_failure("alice", "10.0.0.1"):
            lockouts.value += 1  # type: ignore[attr-defined]


def test_concurrent_failures_on_one_key_are_all_counted(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    """Four processes fail 25 times each: the 100th failure, wherever it lands, locks exactly once."""
    store = metadata_factory(tmp_path)
    barrier, lockouts = FORK.Barrier(4), FORK.Value("i", 0)
    workers = [FORK.Process(target=_fail_many, args=(metadata_factory, tmp_path, barrier, lockouts)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert lockouts.value == 1
    limiter = LoginLimiter(lambda: store, LoginLimits(), lambda: NOW)
    assert limiter.retry_after("alice", "10.0.0.1") == 60

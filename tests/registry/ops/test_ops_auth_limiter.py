"""The failed-login limiter: windows, exponential backoff, its memory bound, and its state shared by the
registry's worker processes (the metadata store's login_failures table), down to a real two-worker server.
(The counters' role on PostgreSQL: tests/store/contract/test_contract_logins.py.)"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

from helpers.registries import start_lamina
from lamina.registry.auth.limits import LoginLimiter, LoginLimits
from lamina.store import open_storage


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _limiter(tmp_path: Path, clock: Clock, **limits: float) -> LoginLimiter:
    """A limiter over its own opening of the root's metadata store (as a worker process would have)."""
    metadata = open_storage(tmp_path / "root").metadata
    return LoginLimiter(lambda: metadata, LoginLimits(**limits), clock)  # type: ignore[arg-type]


def _close(limiter: LoginLimiter) -> None:
    limiter.store().close()  # type: ignore[attr-defined]


def _fail(limiter: LoginLimiter, times: int, user: str = "alice", address: str = "10.0.0.1") -> list[int]:
    return [limiter.record_failure(user, address) for _ in range(times)]


def test_lockouts_double_up_to_the_maximum(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, clock, max_failures=3, lockout_seconds=60, max_lockout_seconds=300)
    assert _fail(limiter, 3) == [0, 0, 60]
    assert limiter.retry_after("alice", "10.0.0.1") == 60
    assert limiter.retry_after("alice", "10.0.0.2") == 0 and limiter.retry_after("bob", "10.0.0.1") == 0
    clock.now += 30
    assert limiter.retry_after("alice", "10.0.0.1") == 30
    lockouts = []
    for _ in range(4):
        clock.now += limiter.retry_after("alice", "10.0.0.1")  # wait the lockout out, then fail again
        assert limiter.retry_after("alice", "10.0.0.1") == 0
        lockouts.append(_fail(limiter, 3)[-1])
    assert lockouts == [120, 240, 300, 300]
    # quiet for max_lockout_seconds after the last lockout ended: the doubling is forgotten
    clock.now += 300 + 301
    assert _fail(limiter, 3) == [0, 0, 60]
    _close(limiter)


def test_failures_count_within_one_window(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, clock, max_failures=3, window_seconds=60)
    assert _fail(limiter, 2) == [0, 0]
    clock.now += 61  # a new window: the two failures are forgotten
    assert _fail(limiter, 2) == [0, 0]
    assert _fail(limiter, 1) == [60]
    _close(limiter)


def test_the_table_stays_bounded_when_usernames_rotate(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path, clock, max_failures=5, max_failures_per_address=10**6, max_tracked=100)
    for i in range(1000):
        clock.now += 0.01
        limiter.record_failure(f"user-{i}", f"10.0.{i % 7}.1")
    assert limiter.tracked() <= 100
    # the newest keys are the ones kept: the last user's failures still count
    assert _fail(limiter, 4, "user-999", "10.0.5.1") == [0, 0, 0, 60]
    _close(limiter)


def test_the_counters_live_in_the_private_metadata_database(tmp_path: Path) -> None:
    limiter = _limiter(tmp_path, Clock())
    limiter.record_failure("alice", "a")
    assert limiter.tracked() == 2  # alice at a, and a alone
    files = list((tmp_path / "root").glob("metadata.db*"))
    assert files and all(path.stat().st_mode & 0o077 == 0 for path in files)
    assert not list(tmp_path.rglob("login-failures.db*"))  # no file of the limiter's own any more
    _close(limiter)


def test_two_limiters_on_one_root_share_the_counts(tmp_path: Path) -> None:
    """Two worker processes each open the root's store: failures seen by either add up."""
    clock = Clock()
    worker_a = _limiter(tmp_path, clock, max_failures=4)
    worker_b = _limiter(tmp_path, clock, max_failures=4)
    assert [worker_a.record_failure("alice", "a"), worker_b.record_failure("alice", "a"),
            worker_a.record_failure("alice", "a"), worker_b.record_failure("alice", "a")] == [0, 0, 0, 60]
    assert worker_a.retry_after("alice", "a") == 60 == worker_b.retry_after("alice", "a")
    _close(worker_a)
    _close(worker_b)


def _get(url: str, user: str, password: str) -> tuple[int, dict[str, str]]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}", "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_a_two_worker_server_limits_across_its_workers_and_audits_to_stderr(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'alice-pw', bcrypt.gensalt(rounds=4)).decode()}\n")
    config = f"""
[auth]
htpasswd = "{htpasswd}"
[[auth.rules]]
repositories = ["apps/*"]
users = ["alice"]
actions = ["pull"]
[auth.failed_logins]
max_failures = 8
"""
    with start_lamina(tmp_path / "server", config=config, workers=2) as server:
        # every request on a new connection: SO_REUSEPORT spreads them over both workers
        statuses = [_get(f"{server.url}/v2/apps/web/tags/list", "alice", f"guess-{i}")[0] for i in range(8)]
        assert statuses == [401] * 7 + [429]
        status, headers = _get(f"{server.url}/v2/", "alice", "alice-pw")
        assert status == 429 and int(headers["Retry-After"]) in (59, 60)
        log = server.stderr_text(100_000)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"reason"' in line]
    assert lines[0]["credentials"] == "none"  # the fixture's readiness probe: anonymous GET /v2/
    lines = [line for line in lines if line["credentials"] == "basic"]
    assert [line["status"] for line in lines] == [401] * 7 + [429, 429]
    assert {line["user"] for line in lines} == {"alice"} and lines[0]["action"] == "pull"
    assert "guess-" not in log and "alice-pw" not in log


def _open_limiter(root: str, start: float) -> bool:
    import time as _time

    _time.sleep(max(0.0, start - _time.time()))  # all processes open the fresh root at the same moment
    metadata = open_storage(Path(root)).metadata
    LoginLimiter(lambda: metadata, LoginLimits()).retry_after("alice", "127.0.0.1")
    metadata.close()
    return True


def test_workers_opening_a_fresh_root_at_once_all_succeed(tmp_path: Path) -> None:
    """Each registry worker opens the metadata database when it starts; SQLite answers "database is locked"
    at once (no busy handler) to a WAL switch racing another process's, which once killed a starting worker."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        for round_no in range(4):
            path = tmp_path / f"round{round_no}" / "root"
            start = time.time() + 1.0
            assert pool.starmap(_open_limiter, [(str(path), start)] * 6) == [True] * 6

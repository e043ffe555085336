"""Login abuse: an unknown user costs the same bcrypt check as a known one, failed logins are limited per
user and client address (429 TOOMANYREQUESTS with Retry-After) on /v2/ and on /token, and every refused
request writes one JSON audit line without a secret."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from opstools import Authed, OpsClient, ops_from_toml
from regtools import error_code, push_blob

from lamina.registry.auth import htpasswd as htpasswd_module
from lamina.registry.auth.htpasswd import Htpasswd
from lamina.registry.config import ConfigError

USERS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _htpasswd(tmp_path: Path, rounds: int = 4) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=rounds)).decode()}\n"
                            for u, p in USERS.items()))
    return path


def _config(tmp_path: Path, limits: str = "max_failures = 3\nmax_failures_per_address = 6") -> str:
    return f"""
[auth]
htpasswd = "{_htpasswd(tmp_path)}"

[[auth.rules]]
repositories = ["apps/*"]
users = ["alice", "bob"]
actions = ["pull", "push"]

[auth.failed_logins]
{limits}
"""


class _CountingCheckpw:
    """bcrypt.checkpw, counted, with the cost of every hash it was given."""

    def __init__(self) -> None:
        self.real = bcrypt.checkpw
        self.costs: list[int] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.costs.append(int(hashed[4:6]))
        return self.real(password, hashed)


def test_unknown_user_pays_one_bcrypt_check_at_the_files_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = Htpasswd(_htpasswd(tmp_path, rounds=5))
    spy = _CountingCheckpw()
    monkeypatch.setattr(htpasswd_module.bcrypt, "checkpw", spy)
    assert not users.verify("alice", "wrong")
    assert not users.verify("mallory", "anything")  # unknown: checked against the dummy hash
    assert not users.verify("mallory", "alice-pw")
    assert spy.costs == [5, 5, 5]
    assert users.verify("alice", "alice-pw") and spy.costs == [5, 5, 5, 5]
    assert users.verify("alice", "alice-pw") and len(spy.costs) == 4  # remembered for a minute
    assert not users.verify("alice", "alice-pw2") and len(spy.costs) == 5  # a different password is checked


def test_unknown_and_known_users_take_the_same_time(tmp_path: Path) -> None:
    """Interleaved samples, the fastest of each compared with a generous bound (load only ever adds time, so
    the minimum is the steadiest figure): before the dummy hash an unknown user answered in microseconds
    against milliseconds (a ratio near 0.003)."""
    users = Htpasswd(_htpasswd(tmp_path, rounds=6))
    known: list[float] = []
    unknown: list[float] = []
    for i in range(15):
        for user, samples in (("alice", known), (f"nobody-{i}", unknown)):
            started = time.perf_counter()
            assert not users.verify(user, "wrong password")
            samples.append(time.perf_counter() - started)
    ratio = min(unknown) / min(known)
    assert 0.5 < ratio < 2.0, (ratio, known, unknown)


async def _other_address(client, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
    """A request from 127.0.0.2 (another loopback address): another client as the limiter sees it."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (aiohttp.ClientSession(connector=connector) as session,
                session.request(method, str(client.make_url(path)), **kwargs) as response):
        return response.status, await response.read()


async def test_failed_logins_are_limited_per_user_and_address(make_ops_client: OpsClient, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    client = await make_ops_client(_config(tmp_path))
    caplog.set_level(logging.WARNING, "lamina.registry.audit")
    for _ in range(2):
        response = await client.get("/v2/apps/web/tags/list", headers=_basic("alice", "guess"))
        assert response.status == 401
    response = await client.get("/v2/apps/web/tags/list", headers=_basic("alice", "guess"))
    assert response.status == 429 and await error_code(response) == "TOOMANYREQUESTS"
    assert response.headers["Retry-After"] == "60"
    assert "alice" in (await response.json())["errors"][0]["message"]
    # locked: the right password too (or the answer would tell a guess was right), on /v2/ and /token
    response = await client.get("/v2/", headers=_basic("alice", "alice-pw"))
    assert response.status == 429 and int(response.headers["Retry-After"]) in (59, 60)
    response = await client.get("/token", params={"service": "lamina-registry"}, headers=_basic("alice", "alice-pw"))
    assert response.status == 429 and response.headers["Retry-After"]
    response = await client.get("/ui/", headers=_basic("alice", "alice-pw"))  # the console too
    assert response.status == 429 and "too many failed logins" in await response.text()
    assert response.headers["Retry-After"] in ("59", "60")
    # another user from this address, and alice from another address, are not locked
    assert (await client.get("/v2/", headers=_basic("bob", "bob-pw"))).status == 200
    status, _ = await _other_address(client, "GET", "/v2/", headers=_basic("alice", "alice-pw"))
    assert status == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lamina.registry.audit"]
    assert [line["status"] for line in lines] == [401, 401, 429, 429, 429, 429]
    first = lines[0]
    assert first["user"] == "alice" and first["credentials"] == "basic" and first["remote"] == "127.0.0.1"
    assert (first["method"], first["path"], first["repository"], first["action"]) == (
        "GET", "/v2/apps/web/tags/list", "apps/web", "pull")
    assert "invalid username or password" in first["reason"] and first["time"].endswith("Z")
    assert lines[-2]["path"] == "/token" and lines[-2]["action"] == "token"
    assert lines[-1]["path"] == "/ui/" and lines[-1]["action"] == "console"
    for record in caplog.records:
        assert "guess" not in record.getMessage() and "alice-pw" not in record.getMessage()


async def test_token_endpoint_password_grant_is_limited_and_unknown_users_count_too(
    make_ops_client: OpsClient, tmp_path: Path
) -> None:
    client = await make_ops_client(_config(tmp_path))
    form = {"grant_type": "password", "username": "nobody", "password": "x", "service": "lamina-registry"}
    statuses = [(await client.post("/token", data=form)).status for _ in range(3)]
    assert statuses == [401, 401, 429]
    response = await client.post("/token", data=form)
    assert response.status == 429 and await error_code(response) == "TOOMANYREQUESTS"
    assert response.headers["Retry-After"] in ("59", "60")


async def test_an_address_rotating_usernames_is_limited_too(make_ops_client: OpsClient, tmp_path: Path) -> None:
    client = await make_ops_client(_config(tmp_path))
    statuses = [(await client.get("/v2/", headers=_basic(f"user-{i}", "x"))).status for i in range(6)]
    assert statuses == [401] * 5 + [429]  # max_failures_per_address = 6: each name failed once only
    assert (await client.get("/v2/", headers=_basic("bob", "bob-pw"))).status == 429  # the address is locked
    status, _ = await _other_address(client, "GET", "/v2/", headers=_basic("bob", "bob-pw"))
    assert status == 200


async def test_refused_requests_write_one_audit_line_each(make_ops_client: OpsClient, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    client = await make_ops_client(_config(tmp_path))
    alice = Authed(client, _basic("alice", "alice-pw"))
    await push_blob(alice, "apps/web", b"layer")
    caplog.set_level(logging.WARNING, "lamina.registry.audit")
    assert (await client.get("/v2/apps/web/tags/list")).status == 401  # anonymous
    assert (await alice.post("/v2/other/x/blobs/uploads/")).status == 403  # no rule
    assert (await alice.delete("/v2/apps/web/manifests/sha256:" + "0" * 64)).status == 403  # push is not delete
    assert (await client.get("/v2/_catalog", headers={"Authorization": "Bearer not.a.token"})).status == 401
    assert (await alice.get("/v2/apps/web/tags/list")).status in (200, 404)  # allowed: no line
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lamina.registry.audit"]
    summary = [(x["status"], x["user"], x["credentials"], x["method"], x["repository"], x["action"]) for x in lines]
    assert summary == [
        (401, None, "none", "GET", "apps/web", "pull"),
        (403, "alice", "basic", "POST", "other/x", "push"),
        (403, "alice", "basic", "DELETE", "apps/web", "delete"),
        (401, None, "bearer", "GET", None, "catalog"),
    ]
    assert all(set(x) == {"time", "remote", "user", "credentials", "method", "path", "repository", "action",
                          "status", "reason"} for x in lines)
    assert "not.a.token" not in caplog.text


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("max_failures = 0", "auth.failed_logins.max_failures: expected an integer >= 1"),
        ("window_seconds = 0", "auth.failed_logins.window_seconds: expected seconds from 1"),
        ("max_tracked = 5", "auth.failed_logins.max_tracked: expected an integer >= 100"),
        ("lockout_seconds = 600\nmax_lockout_seconds = 60", "max_lockout_seconds: 60 is below lockout_seconds 600"),
        ("tries = 3", "unknown setting auth.failed_logins.tries"),
    ],
)
def test_failed_logins_settings_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ops_from_toml(_config(tmp_path, table))


def test_failed_logins_defaults(tmp_path: Path) -> None:
    auth = ops_from_toml(_config(tmp_path, "")).auth
    assert auth is not None
    limits = auth.failed_logins
    assert (limits.max_failures, limits.max_failures_per_address, limits.window_seconds) == (10, 100, 60.0)
    assert (limits.lockout_seconds, limits.max_lockout_seconds, limits.max_tracked) == (60.0, 900.0, 10000)

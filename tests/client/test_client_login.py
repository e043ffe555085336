"""``lamina login`` / ``lamina logout`` against real registries: CNCF distribution with htpasswd (Basic)
and lamina's registry with ``[auth]`` (the Docker token flow); then ``lamina build --push`` with the
saved credentials; and the same through a real credential helper, ``docker-credential-pass`` (Debian's
golang-docker-credential-helpers) over ``pass`` with a passphrase-less GnuPG key made for the test."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from helpers.binaries import require_binary
from helpers.registries import RegistryProcess
from lamina.cli import main
from lamina.client import Credentials, CredentialStore, RegistryClient
from lamina.client.logincli import PASSWORD_WARNING

pytestmark = [pytest.mark.interop]

Login = Callable[..., tuple[int, str, str]]


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$DOCKER_CONFIG`` in a fresh directory that does not exist yet; returns config.json's path."""
    directory = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory / "config.json"


@pytest.fixture
def lamina(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Login:
    """Run ``lamina ARGS...`` in this process with ``stdin`` text (not a terminal); -> (rc, out, err)."""

    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def auth_lamina(make_lamina_registry, tmp_path: Path) -> RegistryProcess:  # type: ignore[no-untyped-def]
    """lamina's registry with [auth]: ``alice``/``alice-pw`` may pull and push ``apps/**``."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'alice-pw', bcrypt.gensalt(rounds=4)).decode()}\n")
    server: RegistryProcess = make_lamina_registry(config=f"""
[auth]
htpasswd = "{htpasswd}"
[[auth.rules]]
repositories = ["apps/**"]
users = ["alice"]
actions = ["pull", "push"]
""")
    return server


def _auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _build_and_push(lamina: Login, tmp_path: Path, ref: str) -> None:
    """``lamina build --push`` of FROM scratch + COPY (no RUN: no root needed), credentials from config."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text("hello from lamina login\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    rc, out, err = lamina("build", "--root", str(tmp_path / "state"), "--progress", "plain", "-t", ref, "--push",
                          str(context))
    assert rc == 0 and out.startswith("sha256:"), err


async def _tags(host: str, repository: str, credentials: Credentials) -> list[str]:
    async with RegistryClient(host, credentials=credentials) as client:
        return await client.list_tags(repository)


def test_login_basic_registry_keeps_other_keys_and_logout_removes(
    htpasswd_distribution: RegistryProcess, docker_config: Path, lamina: Login
) -> None:
    host = htpasswd_distribution.host
    docker_config.parent.mkdir(mode=0o755)
    others = {
        "auths": {"other.example:5000": _auth("x", "y"), f"https://{host}/v2/": _auth("alice", "stale")},
        "proxies": {"default": {"noProxy": "127.0.0.1"}},
        "HttpHeaders": {"X-Meta": "kept"},
        "currentContext": "default",
    }
    docker_config.write_text(json.dumps(others))
    docker_config.chmod(0o644)

    rc, out, err = lamina("login", host, "-u", "alice", "--password-stdin", stdin="wonderland\n")
    assert (rc, out, err) == (0, "Login Succeeded\n", "")
    saved = json.loads(docker_config.read_text())
    assert saved["auths"] == {"other.example:5000": _auth("x", "y"), host: _auth("alice", "wonderland")}
    assert {k: saved[k] for k in ("proxies", "HttpHeaders", "currentContext")} == {
        k: others[k] for k in ("proxies", "HttpHeaders", "currentContext")
    }
    assert stat.S_IMODE(docker_config.stat().st_mode) == 0o600
    assert [p.name for p in docker_config.parent.iterdir()] == ["config.json"]  # no temporary file left

    rc, out, err = lamina("logout", host)
    assert (rc, out, err) == (0, f"Removing login credentials for {host}\n", "")
    assert json.loads(docker_config.read_text())["auths"] == {"other.example:5000": _auth("x", "y")}
    # docker logout of a registry with nothing stored: the same message, exit 0
    assert lamina("logout", host) == (0, f"Removing login credentials for {host}\n", "")


def test_wrong_password_fails_and_writes_nothing(
    htpasswd_distribution: RegistryProcess, docker_config: Path, lamina: Login
) -> None:
    host = htpasswd_distribution.host
    rc, out, err = lamina("login", host, "-u", "alice", "--password-stdin", stdin="nope\n")
    assert rc == 1 and out == ""
    assert err.startswith(f"error: login to {host} failed: ") and err.count("\n") == 1 and "401" in err
    assert not docker_config.parent.exists()  # not even the directory

    docker_config.parent.mkdir()
    docker_config.write_text('{"auths": {}, "credsStore": ""}')
    before = docker_config.read_bytes(), docker_config.stat().st_mtime_ns
    assert lamina("login", host, "-u", "alice", "--password-stdin", stdin="wrong\n")[0] == 1
    assert (docker_config.read_bytes(), docker_config.stat().st_mtime_ns) == before


def test_password_flag_warns_like_docker_and_bad_input_is_one_line(
    htpasswd_distribution: RegistryProcess, docker_config: Path, lamina: Login
) -> None:
    host = htpasswd_distribution.host
    rc, out, err = lamina("login", "-u", "alice", "-p", "wonderland", f"http://{host}/v2/")
    assert (rc, out, err) == (0, "Login Succeeded\n", PASSWORD_WARNING + "\n")
    assert json.loads(docker_config.read_text())["auths"] == {host: _auth("alice", "wonderland")}
    before = docker_config.read_bytes()
    cases = [
        (("-u", "alice"), "", f"error: no password (--password-stdin) for {host} and stdin is not a terminal"),
        ((), "", f"error: no username (-u USER) for {host} and stdin is not a terminal"),
        (("--password-stdin",), "pw\n", "error: --password-stdin needs --username (-u USER)"),
        (("-u", "alice", "--password-stdin"), "\n", "error: --password-stdin: stdin was empty"),
    ]
    for flags, stdin, expected in cases:
        rc, out, err = lamina("login", *flags, host, stdin=stdin)
        assert rc == 1 and out == "" and err.startswith(expected) and err.count("\n") == 1, (flags, err)
    rc, _, err = lamina("login", "-u", "a", "-p", "x", "--password-stdin", host, stdin="x")
    assert rc == 1 and err.splitlines() == [PASSWORD_WARNING, "error: --password and --password-stdin are "
                                            "mutually exclusive: use one"]
    rc, _, err = lamina("login", "-u", "a", "--password-stdin", "bad host", stdin="x")
    assert rc == 1 and err == "error: invalid registry 'bad host': expected HOST[:PORT], e.g. ghcr.io or " \
                              "127.0.0.1:5000\n"
    assert docker_config.read_bytes() == before


def test_corrupt_config_is_reported_and_left_alone(docker_config: Path, lamina: Login) -> None:
    docker_config.parent.mkdir()
    docker_config.write_text('{"auths": ')
    rc, out, err = lamina("login", "-u", "alice", "--password-stdin", "127.0.0.1:1", stdin="pw\n")
    assert rc == 1 and err.startswith(f"error: docker config {docker_config} is not valid JSON")
    assert err.count("\n") == 1
    assert docker_config.read_text() == '{"auths": '
    docker_config.write_text('{"auths": []}')
    rc, out, _ = lamina("logout", "127.0.0.1:1")
    assert (rc, out) == (0, "Removing login credentials for 127.0.0.1:1\n")
    assert docker_config.read_text() == '{"auths": []}'


def test_login_token_flow_then_build_push(
    auth_lamina: RegistryProcess, docker_config: Path, tmp_path: Path, lamina: Login
) -> None:
    host = auth_lamina.host
    rc, _, err = lamina("login", host, "-u", "alice", "--password-stdin", stdin="bad-pw\n")
    assert rc == 1 and err.startswith(f"error: login to {host} failed: ") and not docker_config.exists()

    # the CI recipe, through a real pipe into a real process
    argv = [sys.executable, "-m", "lamina.cli", "login", "--username", "alice", "--password-stdin", host]
    proc = subprocess.run(argv, input="alice-pw\n", capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Login Succeeded\n", "")
    assert json.loads(docker_config.read_text()) == {"auths": {host: _auth("alice", "alice-pw")}}
    assert stat.S_IMODE(docker_config.parent.stat().st_mode) == 0o700

    _build_and_push(lamina, tmp_path, f"{host}/apps/hello:v1")
    assert asyncio.run(_tags(host, "apps/hello", Credentials("alice", "alice-pw"))) == ["v1"]
    assert asyncio.run(CredentialStore(docker_config).get(host)) == Credentials("alice", "alice-pw")


def test_build_push_with_basic_login(
    htpasswd_distribution: RegistryProcess, docker_config: Path, tmp_path: Path, lamina: Login
) -> None:
    host = htpasswd_distribution.host
    # CRLF at the end: docker drops "\n" then "\r"
    rc, out, _ = lamina("login", host, "-u", "alice", "--password-stdin", stdin="wonderland\r\n")
    assert (rc, out) == (0, "Login Succeeded\n")
    _build_and_push(lamina, tmp_path, f"{host}/team/app:v1")
    assert asyncio.run(_tags(host, "team/app", Credentials("alice", "wonderland"))) == ["v1"]


def _read_until(fd: int, wanted: bytes | None, seen: bytearray, timeout: float = 60.0) -> None:
    """Read the terminal's output into ``seen`` until it holds ``wanted`` (None: until the program exits)."""
    deadline = time.monotonic() + timeout
    while wanted is None or wanted not in seen:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {wanted!r} within {timeout:.0f}s; the terminal showed {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the program exited and closed the terminal
            chunk = b""
        if not chunk:
            assert wanted is None, f"exited before {wanted!r}; the terminal showed {bytes(seen)!r}"
            return
        seen += chunk


def test_prompts_for_username_and_password_on_a_terminal(
    htpasswd_distribution: RegistryProcess, docker_config: Path
) -> None:
    host = htpasswd_distribution.host
    pid, fd = pty.fork()  # the child's stdin is a real terminal, its controlling one (getpass reads /dev/tty)
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "lamina.cli", "login", host])
    seen = bytearray()
    try:
        _read_until(fd, b"Username: ", seen)
        os.write(fd, b"alice\n")
        _read_until(fd, b"Password: ", seen)
        os.write(fd, b"wonderland\n")
        _read_until(fd, None, seen)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and b"Login Succeeded" in seen, bytes(seen)
    assert b"wonderland" not in seen  # getpass turned the echo off
    assert json.loads(docker_config.read_text())["auths"] == {host: _auth("alice", "wonderland")}


@pytest.fixture
def pass_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An initialised ``pass`` store with its own GnuPG home (no passphrase); its gpg-agent is stopped after."""
    require_binary("docker-credential-pass", "golang-docker-credential-helpers")
    require_binary("pass", "pass")
    require_binary("gpgconf", "gpgconf")
    gpg = require_binary("gpg", "gpg")
    home = Path(tempfile.mkdtemp(prefix="lamina-pass-"))  # short: gpg-agent's socket path has a length limit
    env = {"GNUPGHOME": str(home / "gnupg"), "PASSWORD_STORE_DIR": str(home / "store")}
    (home / "gnupg").mkdir(mode=0o700)
    full = {**os.environ, **env}
    try:
        subprocess.run([gpg, "--batch", "--passphrase", "", "--quick-gen-key", "lamina-test@example.invalid",
                        "future-default", "default", "never"], env=full, check=True, capture_output=True, timeout=60)
        subprocess.run(["pass", "init", "lamina-test@example.invalid"], env=full, check=True, capture_output=True,
                       timeout=60)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield env
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=full, capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def _helper_get(host: str) -> dict[str, str]:
    proc = subprocess.run(["docker-credential-pass", "get"], input=host, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, str] = json.loads(proc.stdout)
    return doc


@pytest.mark.parametrize("where", ["credsStore", "credHelpers"])
def test_login_through_pass_helper_then_build_push_and_logout(
    where: str, htpasswd_distribution: RegistryProcess, docker_config: Path, pass_store: dict[str, str],
    tmp_path: Path, lamina: Login,
) -> None:
    host = htpasswd_distribution.host
    docker_config.parent.mkdir()
    helper_key: dict[str, object] = {"credsStore": "pass"} if where == "credsStore" else {"credHelpers": {host: "pass"}}
    docker_config.write_text(json.dumps({**helper_key, "auths": {host: _auth("alice", "old-secret")}}))

    rc, out, err = lamina("login", host, "-u", "alice", "--password-stdin", stdin="wonderland\n")
    assert (rc, out, err) == (0, "Login Succeeded\n", "")
    text = docker_config.read_text()
    assert json.loads(text) == {**helper_key, "auths": {host: {}}}  # docker's native store: an empty entry
    assert "wonderland" not in text and "old-secret" not in text
    assert _helper_get(host) == {"ServerURL": host, "Username": "alice", "Secret": "wonderland"}
    _build_and_push(lamina, tmp_path, f"{host}/team/helper:v1")  # the builder reads the secret back through the helper

    assert asyncio.run(_tags(host, "team/helper", Credentials("alice", "wonderland"))) == ["v1"]

    rc, out, err = lamina("logout", host)
    assert (rc, out, err) == (0, f"Removing login credentials for {host}\n", "")
    assert json.loads(docker_config.read_text()) == {**helper_key, "auths": {}}
    assert asyncio.run(CredentialStore(docker_config).get(host)) is None
    # nothing left to erase: docker's warning (every spelling failed), still exit 0
    rc, out, err = lamina("logout", host)
    assert rc == 0 and out == f"Removing login credentials for {host}\n"
    assert err.startswith(f"WARNING: could not erase credentials: credential helper docker-credential-pass could "
                          f"not erase credentials for {host} (") and err.count("\n") == 1


def test_failing_helper_is_one_line_and_config_untouched(
    htpasswd_distribution: RegistryProcess, docker_config: Path, pass_store: dict[str, str],
    monkeypatch: pytest.MonkeyPatch, lamina: Login,
) -> None:
    host = htpasswd_distribution.host
    docker_config.parent.mkdir()
    docker_config.write_text(json.dumps({"credsStore": "lamina-absent"}))
    rc, out, err = lamina("login", host, "-u", "alice", "--password-stdin", stdin="wonderland\n")
    assert rc == 1 and out == "" and err == (
        "error: credential helper docker-credential-lamina-absent not found on PATH: install it, or remove "
        f"'lamina-absent' from credsStore/credHelpers in {docker_config}\n")
    # a real helper that fails: pass over a store nobody initialised
    empty = Path(pass_store["PASSWORD_STORE_DIR"]).with_name("uninitialised")
    empty.mkdir()
    monkeypatch.setenv("PASSWORD_STORE_DIR", str(empty))
    docker_config.write_text(json.dumps({"credHelpers": {host: "pass"}}))
    rc, out, err = lamina("login", host, "-u", "alice", "--password-stdin", stdin="wonderland\n")
    assert rc == 1 and err.count("\n") == 1 and "pass init" in err
    assert err.startswith(f"error: credential helper docker-credential-pass could not store credentials for {host} (")
    assert err.endswith(f"check that `docker-credential-pass list` works, or remove 'pass' from "
                        f"credsStore/credHelpers in {docker_config}\n")
    assert json.loads(docker_config.read_text()) == {"credHelpers": {host: "pass"}}

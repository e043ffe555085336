"""``lamina build`` pushing to registries that need login, with the base image on another registry.

Real authenticated registries: CNCF distribution with htpasswd (Basic, as ECR answers), CNCF
distribution with ``auth: token`` trusting a JWT issuer this test runs (a realm on another port), CNCF
distribution with ``auth: token`` trusting lamina's token service (``lamina registry token-cert`` as its
``rootcertbundle``), and lamina's registry with ``[auth]`` (its own token service). Each gets a cold build
that pushes the image (10 layers, sent concurrently) and a ``mode=max`` cache, then a build from a fresh
state directory with ``--cache-from`` that must be fully cached (twice over, except for the lamina-issued
tokens, whose build path is the same as the other issuer's). Credentials come from a ``DOCKER_CONFIG`` dir.
Also: a 10-second token outliving a build step, and a failing credential helper as one line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web

from helpers.binaries import require_binary
from helpers.buildcli import build as _build
from helpers.images import busybox_image
from helpers.registries import DISTRIBUTION_BINARY, RegistryProcess, start_distribution
from helpers.token_issuer import TokenIssuer, serve
from lamina.cli import main

pytestmark = [pytest.mark.root, pytest.mark.interop]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

USER, PASSWORD = "alice", "wonderland"
COPIES = 7  # + 2 RUN layers + the base layer = 10 layers pushed at once


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    """The base image, on an anonymous registry other than the push target."""
    return busybox_image(lamina_registry, name="auth/busybox", rootfs=busybox_rootfs).reference


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    return path


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG dir for this test; :func:`_login` writes config.json into it."""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


def _login(config_dir: Path, host: str) -> None:
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": encoded}}}))


def _distribution(workdir: Path, auth: dict[str, object]) -> RegistryProcess:
    require_binary(DISTRIBUTION_BINARY, "docker-registry")
    return start_distribution(workdir, auth=auth)


@contextmanager
def _served_in_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` from its own event loop in a thread (the builds run their own loops); yields host:port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    host, runner = asyncio.run_coroutine_threadsafe(serve(app), loop).result(10)
    try:
        yield host
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _start_lamina_auth(make_lamina_registry: object, htpasswd: Path, lifetime: int = 300) -> RegistryProcess:
    config = (
        "access_log = true\n"
        f'[auth]\nhtpasswd = "{htpasswd}"\n'
        f'[[auth.rules]]\nrepositories = ["**"]\nusers = ["{USER}"]\nactions = ["pull", "push"]\n'
        f"[auth.token]\nlifetime_seconds = {lifetime}\n"
    )
    return make_lamina_registry(config)  # type: ignore[operator,no-any-return]


def _context(path: Path, base: str, run_extra: str = "") -> Path:
    """A Dockerfile of 7 COPY and 2 RUN layers over ``base``, with content unique to this test run."""
    path.mkdir(parents=True, exist_ok=True)
    nonce = uuid.uuid4().hex
    lines = [f"FROM {base}"]
    for i in range(COPIES):
        (path / f"f{i}.txt").write_text(f"{nonce} file {i}\n" * (200 * (i + 1)))
        lines.append(f"COPY f{i}.txt /data/f{i}.txt")
    lines.append(f"RUN {run_extra}echo {nonce} > /data/run-a && echo ran-step-a")
    lines.append("RUN cat /data/f*.txt | wc -c > /data/run-b && echo ran-step-b")
    (path / "Dockerfile").write_text("\n".join(lines) + "\n")
    return path



def _step_status(err: str) -> dict[str, str]:
    """Every non-FROM step -> its first status line, from plain progress output."""
    names: dict[str, str] = {}
    first: dict[str, str] = {}
    for line in err.splitlines():
        vertex, _, rest = line.partition(" ")
        if not vertex.startswith("#"):
            continue
        if rest.startswith("["):
            names[vertex] = rest
        elif vertex in names and names[vertex] not in first:
            first[names[vertex]] = rest
    return {name: status for name, status in first.items() if "FROM" not in name}


def _ran(err: str, marker: str) -> bool:
    return re.search(rf"^#\d+ \d+\.\d+ {re.escape(marker)}$", err, re.M) is not None


def _layers_in_registry(host: str, ref: str) -> int:
    """Layer count of a pushed image, read by skopeo with the same credentials (an independent client)."""
    require_binary("skopeo", "skopeo")
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{host}/{ref}"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return len(json.loads(result.stdout)["layers"])


def _cold_then_warm(host: str, base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], rounds: int = 2) -> None:
    """Per round: a cold build that pushes the image and a max cache, then a fresh state dir with
    ``--cache-from`` (pushing again): no failure, and the warm build runs nothing."""
    for n in range(rounds):
        context = _context(tmp_path / f"ctx{n}", base)
        cache = f"{host}/team/cache:round{n}"
        cache_to = f"type=registry,ref={cache},mode=max,image-manifest=true"
        rc, cold_digest, err = _build(capsys, context, tmp_path / f"cold{n}", "-t", f"{host}/team/app:cold{n}",
                                      "--push", "--cache-to", cache_to)
        assert rc == 0, err
        assert _ran(err, "ran-step-a") and _ran(err, "ran-step-b")
        assert _layers_in_registry(host, f"team/app:cold{n}") == COPIES + 3

        rc, warm_digest, err = _build(capsys, context, tmp_path / f"warm{n}", "-t", f"{host}/team/app:warm{n}",
                                      "--push", "--cache-from", f"type=registry,ref={cache}", "--cache-to", cache_to)
        assert rc == 0, err
        status = _step_status(err)
        assert len(status) == COPIES + 2, err
        assert all(line.startswith("CACHED") for line in status.values()), err
        assert not _ran(err, "ran-step-a") and not _ran(err, "ran-step-b")
        assert warm_digest == cold_digest
        assert _layers_in_registry(host, f"team/app:warm{n}") == COPIES + 3


def test_distribution_htpasswd_basic(base: str, htpasswd: Path, docker_config: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    registry = _distribution(tmp_path / "registry", auth={"htpasswd": {"realm": "ci", "path": str(htpasswd)}})
    try:
        _login(docker_config, registry.host)
        _cold_then_warm(registry.host, base, tmp_path, capsys)
    finally:
        registry.stop()


def test_distribution_token_auth_with_our_issuer(base: str, docker_config: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    issuer = TokenIssuer(users={USER: PASSWORD}, refresh_tokens={})
    with _served_in_thread(issuer.app()) as realm_host:
        bundle = tmp_path / "issuer.pem"
        issuer.write_bundle(bundle)
        auth = {"token": {"realm": f"http://{realm_host}/token", "service": issuer.service,
                          "issuer": issuer.issuer, "rootcertbundle": str(bundle)}}
        registry = _distribution(tmp_path / "registry", auth=auth)
        try:
            _login(docker_config, registry.host)
            _cold_then_warm(registry.host, base, tmp_path, capsys)
        finally:
            registry.stop()
    # Exactly one token request per build (4 builds): the declared push and cache scopes, asked for once
    # by the first concurrent requests together. The other requests are skopeo's (pull on team/app).
    ours = [r["scopes"] for r in issuer.requests if r["scopes"] != ["repository:team/app:pull"]]
    assert ours == [["repository:team/app:pull,push", "repository:team/cache:pull,push"]] * 4, issuer.requests


def test_distribution_token_auth_with_lamina_token_service(base: str, htpasswd: Path, docker_config: Path,
                                                            tmp_path: Path, make_lamina_registry: object,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """distribution's realm is lamina's /token; it verifies lamina's tokens by the certificate token-cert printed."""
    service, issuer_name = "ci-distribution", "lamina-ci"
    issuer: RegistryProcess = make_lamina_registry(  # type: ignore[operator]
        "access_log = true\n"
        f'[auth]\nhtpasswd = "{htpasswd}"\n'
        f'[[auth.rules]]\nrepositories = ["team/**"]\nusers = ["{USER}"]\nactions = ["pull", "push"]\n'
        f'[auth.token]\nservice = "{service}"\nissuer = "{issuer_name}"\n'
    )
    bundle = tmp_path / "lamina-token.crt"
    config = issuer.root.parent / "config.toml"  # where start_lamina wrote the settings
    rc = main(["registry", "token-cert", "--config", str(config), "--root", str(issuer.root), "--out", str(bundle)])
    assert rc == 0
    assert capsys.readouterr() == ("", "")
    auth = {"token": {"realm": f"{issuer.url}/token", "service": service, "issuer": issuer_name,
                      "rootcertbundle": str(bundle)}}
    registry = _distribution(tmp_path / "registry", auth=auth)
    try:
        _login(docker_config, registry.host)
        _cold_then_warm(registry.host, base, tmp_path, capsys, rounds=1)
    finally:
        registry.stop()
    log = [json.loads(line) for line in issuer.stderr_text(1 << 20).splitlines() if line.startswith("{")]
    tokens = [entry["status"] for entry in log if entry["path"] == "/token"]
    assert len(tokens) >= 2 and set(tokens) == {200}, log  # one per build at least, none refused


def test_lamina_registry_with_auth(base: str, htpasswd: Path, docker_config: Path, tmp_path: Path,
                                   make_lamina_registry: object, capsys: pytest.CaptureFixture[str]) -> None:
    registry = _start_lamina_auth(make_lamina_registry, htpasswd)
    _login(docker_config, registry.host)
    _cold_then_warm(registry.host, base, tmp_path, capsys)


def test_token_expiring_mid_build_is_renewed(base: str, htpasswd: Path, docker_config: Path, tmp_path: Path,
                                             make_lamina_registry: object,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A 10 s token, fetched at the start (for the --cache-from lookup), and a RUN of 12 s before the push."""
    registry = _start_lamina_auth(make_lamina_registry, htpasswd, lifetime=10)
    _login(docker_config, registry.host)
    context = _context(tmp_path / "ctx", base, run_extra="sleep 12 && ")
    cache = f"{registry.host}/team/cache:slow"
    rc, _, err = _build(capsys, context, tmp_path / "state", "-t", f"{registry.host}/team/app:slow", "--push",
                        "--cache-from", f"type=registry,ref={cache}",
                        "--cache-to", f"type=registry,ref={cache},mode=max,image-manifest=true")
    assert rc == 0, err
    assert f"WARNING: cache {cache} not found" in err  # the registry was asked (and a token fetched) up front
    assert _layers_in_registry(registry.host, "team/app:slow") == COPIES + 3
    ours = [json.loads(line) for line in registry.stderr_text(1 << 20).splitlines()
            if line.startswith("{") and (json.loads(line).get("user_agent") or "").startswith("lamina/")]
    tokens = [i for i, entry in enumerate(ours) if entry["path"] == "/token"]
    assert len(tokens) == 2, ours  # one at the start, one renewal before the push; not one per request
    assert [e for e in ours[tokens[0]:] if e["status"] == 401] == []  # renewed before use: never refused


def test_failing_credential_helper_is_one_line(base: str, htpasswd: Path, docker_config: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    registry = _distribution(tmp_path / "registry", auth={"htpasswd": {"realm": "ci", "path": str(htpasswd)}})
    try:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        helper = bindir / "docker-credential-vault"
        helper.write_text("#!/bin/sh\necho 'vault sealed:' >&2\necho '  unseal it first' >&2\nexit 1\n")
        helper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
        (docker_config / "config.json").write_text(json.dumps({"credsStore": "vault"}))
        context = _context(tmp_path / "ctx", base)
        rc, out, err = _build(capsys, context, tmp_path / "state", "-t", f"{registry.host}/team/app:x", "--push")
    finally:
        registry.stop()
    assert rc == 1 and out == ""
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err, err
    assert err.rstrip().endswith(error_lines[0])
    assert "docker-credential-vault" in error_lines[0] and "vault sealed: unseal it first" in error_lines[0]
    assert registry.host in error_lines[0]

"""Credentials from docker's config.json and real ``docker-credential-*`` helper executables."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import pytest
from aiohttp import web
from client_peers import serve

from lamina.client import CredentialError, Credentials, CredentialStore, RegistryClient, Unauthorized


def _config(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def _helper(bindir: Path, name: str, body: str) -> Path:
    """Write an executable helper that logs its stdin to ``<name>.log`` and then runs ``body``."""
    log = bindir / f"{name}.log"
    script = bindir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread server\necho \"$server\" >> {log}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


async def test_auths_base64_and_plain_fields(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"u1:p:with:colons").decode()
    path = _config(tmp_path, {"auths": {
        "reg.example.com:5000": {"auth": encoded},
        "https://other.example.com/v1/": {"username": "u2", "password": "p2"},
        "tok.example.com": {"identitytoken": "refresh-123"},
    }})
    store = CredentialStore(path)
    assert await store.get("reg.example.com:5000") == Credentials("u1", "p:with:colons")
    assert await store.get("other.example.com") == Credentials("u2", "p2")
    assert await store.get("tok.example.com") == Credentials(None, None, "refresh-123")
    assert await store.get("unknown.example.com") is None


async def test_docker_hub_key_normalisation(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"hubuser:hubpass").decode()
    store = CredentialStore(_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": encoded}}}))
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert await store.get(host) == Credentials("hubuser", "hubpass")


async def test_docker_config_env_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert CredentialStore.default_path() == tmp_path / "config.json"
    assert await CredentialStore().get("anything.example.com") is None
    _config(tmp_path, {"auths": {"x.example.com": {"username": "a", "password": "b"}}})
    assert await CredentialStore().get("x.example.com") == Credentials("a", "b")


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(CredentialError, match=r"config\.json is not valid JSON"):
        CredentialStore(path)


async def test_bad_base64_names_the_entry(tmp_path: Path) -> None:
    store = CredentialStore(_config(tmp_path, {"auths": {"bad.example.com": {"auth": "***"}}}))
    with pytest.raises(CredentialError, match=re.escape("bad.example.com")):
        await store.get("bad.example.com")


async def test_cred_helper_for_one_host(tmp_path: Path, helper_path: Path) -> None:
    log = _helper(helper_path, "test", """echo '{"ServerURL":"x","Username":"AWS","Secret":"ecr-password"}'""")
    store = CredentialStore(_config(tmp_path, {
        "credHelpers": {"123.dkr.ecr.example.com": "test"},
        "auths": {"123.dkr.ecr.example.com": {"username": "ignored", "password": "ignored"}},
    }))
    assert await store.get("123.dkr.ecr.example.com") == Credentials("AWS", "ecr-password")
    assert await store.get("123.dkr.ecr.example.com") == Credentials("AWS", "ecr-password")
    assert log.read_text().splitlines() == ["123.dkr.ecr.example.com"]  # asked once, then cached


async def test_creds_store_with_docker_hub_server_url(tmp_path: Path, helper_path: Path) -> None:
    log = _helper(helper_path, "desktop", """echo '{"Username":"<token>","Secret":"idtok"}'""")
    store = CredentialStore(_config(tmp_path, {"credsStore": "desktop"}))
    assert await store.get("docker.io") == Credentials(identity_token="idtok")
    assert log.read_text().splitlines() == ["https://index.docker.io/v1/"]


async def test_creds_store_not_found_falls_back_to_auths(tmp_path: Path, helper_path: Path) -> None:
    _helper(helper_path, "empty", "echo 'credentials not found in native keychain'; exit 1")
    store = CredentialStore(_config(tmp_path, {
        "credsStore": "empty", "auths": {"plain.example.com": {"username": "p", "password": "q"}},
    }))
    assert await store.get("plain.example.com") == Credentials("p", "q")
    assert await store.get("nothing.example.com") is None


async def test_failing_helper_is_a_clear_error(tmp_path: Path, helper_path: Path) -> None:
    _helper(helper_path, "broken", "echo 'token expired, run aws sso login' >&2; exit 1")
    store = CredentialStore(_config(tmp_path, {"credHelpers": {"r.example.com": "broken"}}))
    expected = re.escape("docker-credential-broken failed for r.example.com: token expired")
    with pytest.raises(CredentialError, match=expected):
        await store.get("r.example.com")


async def test_missing_helper_is_a_clear_error(tmp_path: Path, helper_path: Path) -> None:
    store = CredentialStore(_config(tmp_path, {"credHelpers": {"r.example.com": "absent"}}))
    with pytest.raises(CredentialError, match="docker-credential-absent not found on PATH"):
        await store.get("r.example.com")


def test_repr_hides_secrets() -> None:
    text = repr(Credentials("user", "hunter2", "tok-secret"))
    assert "hunter2" not in text and "tok-secret" not in text and "user" in text


async def test_helper_failure_during_a_request_is_a_registry_error(tmp_path: Path, helper_path: Path) -> None:
    """The cache importer turns any RegistryError into a warning, so a broken helper must be one too."""
    async def challenge(request: web.Request) -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    app = web.Application()
    app.router.add_get("/v2/", challenge)
    host, runner = await serve(app)
    _helper(helper_path, "broken", "echo 'helper exploded' >&2; exit 2")
    try:
        store = CredentialStore(_config(tmp_path, {"credHelpers": {host: "broken"}}))
        async with RegistryClient(host, credentials=store) as c:
            with pytest.raises(Unauthorized, match="helper exploded") as info:
                await c.ping()
        assert info.value.code == "CREDENTIALS" and host in str(info.value)
    finally:
        await runner.cleanup()

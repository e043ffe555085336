"""Auth against real distribution: htpasswd Basic and the token (Bearer) flow with our JWT issuer."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from client_peers import TokenRegistry

from helpers.registries import RegistryProcess
from lamina.client import (
    Credentials,
    CredentialStore,
    PushOutcome,
    RegistryClient,
    Unauthorized,
)
from lamina.client.auth import parse_challenge
from lamina.client.scopes import ScopeSet
from lamina.oci import digest_of


def test_parse_challenge_bearer_with_quotes_and_commas() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert c is not None
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }


def test_parse_challenge_basic_and_garbage() -> None:
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic" and basic.params == {"realm": "Registry Realm"}
    assert parse_challenge("") is None
    escaped = parse_challenge(r'Bearer realm="a\"b"')
    assert escaped is not None and escaped.params["realm"] == 'a"b'


@pytest.mark.interop
async def test_basic_auth_push_and_pull(htpasswd_distribution: RegistryProcess) -> None:
    data = b"basic auth blob"
    digest = digest_of(data)
    async with RegistryClient(htpasswd_distribution.host, credentials=Credentials("alice", "wonderland")) as c:
        await c.ping()
        assert await c.push_blob("team/app", digest, len(data), data) == PushOutcome.UPLOADED
        assert await c.fetch_blob("team/app", digest) == data


@pytest.mark.interop
async def test_basic_auth_wrong_password_is_unauthorized(htpasswd_distribution: RegistryProcess) -> None:
    async with RegistryClient(htpasswd_distribution.host, credentials=Credentials("alice", "nope")) as c:
        with pytest.raises(Unauthorized) as info:
            await c.head_blob("team/app", digest_of(b"x"))
    assert info.value.status == 401
    assert htpasswd_distribution.host in str(info.value) and "team/app" in str(info.value)


@pytest.mark.interop
async def test_basic_auth_from_docker_config(htpasswd_distribution: RegistryProcess, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    encoded = base64.b64encode(b"alice:wonderland").decode()
    config.write_text(json.dumps({"auths": {f"http://{htpasswd_distribution.host}/v2/": {"auth": encoded}}}))
    async with RegistryClient(htpasswd_distribution.host, credentials=CredentialStore(config)) as c:
        await c.ping()


@pytest.mark.interop
async def test_anonymous_on_basic_registry_is_unauthorized(htpasswd_distribution: RegistryProcess) -> None:
    async with RegistryClient(htpasswd_distribution.host, credentials=Credentials()) as c:
        with pytest.raises(Unauthorized):
            await c.ping()


@pytest.mark.interop
async def test_bearer_flow_push_pull_and_token_cache(token_registry: TokenRegistry) -> None:
    issuer = token_registry.issuer
    data = b"bearer blob" * 50
    digest = digest_of(data)
    async with RegistryClient(token_registry.registry.host, credentials=Credentials("bob", "builder")) as c:
        assert await c.push_blob("ci/cache", digest, len(data), data) == PushOutcome.UPLOADED
        assert await c.push_blob("ci/cache", digest, len(data), data) == PushOutcome.EXISTS
        assert await c.fetch_blob("ci/cache", digest) == data
        assert await c.fetch_blob("ci/cache", digest) == data
    scopes = [tuple(r["scopes"]) for r in issuer.requests]
    # One token per scope set, reused until expiry: pull,push once and pull once.
    assert scopes.count(("repository:ci/cache:pull,push",)) == 1
    assert scopes.count(("repository:ci/cache:pull",)) == 1
    assert all(r["account"] == "bob" and r["service"] == issuer.service for r in issuer.requests)


@pytest.mark.interop
async def test_bearer_cross_repo_mount_asks_pull_on_source(token_registry: TokenRegistry) -> None:
    issuer = token_registry.issuer
    data = b"mount me" * 10
    digest = digest_of(data)
    async with RegistryClient(token_registry.registry.host, credentials=Credentials("bob", "builder")) as c:
        await c.push_blob("base/image", digest, len(data), data)
        before = c.stats.uploaded["layer"]
        outcome = await c.push_blob("app/image", digest, len(data), data, mount_from=["base/image"])
        assert outcome == PushOutcome.MOUNTED
        assert c.stats.uploaded["layer"] == before  # not a byte sent
        assert await c.head_blob("app/image", digest) == len(data)
    # The token the mount used covers push on the target and pull on the source (one token, the union).
    wanted = ScopeSet.parse(["repository:app/image:pull,push", "repository:base/image:pull"])
    assert any(ScopeSet.parse(r["scopes"]).covers(wanted) for r in issuer.requests)


@pytest.mark.interop
async def test_bearer_mount_denied_source_falls_back_to_upload(token_registry: TokenRegistry) -> None:
    issuer = token_registry.issuer
    data = b"secret base" * 10
    digest = digest_of(data)
    async with RegistryClient(token_registry.registry.host, credentials=Credentials("bob", "builder")) as c:
        await c.push_blob("private/base", digest, len(data), data)
        issuer.denied_pull.add("private/base")
        outcome = await c.push_blob("app/two", digest, len(data), data, mount_from=["private/base"])
    assert outcome == PushOutcome.UPLOADED


@pytest.mark.interop
async def test_bearer_identity_token_uses_refresh_grant(token_registry: TokenRegistry) -> None:
    issuer = token_registry.issuer
    data = b"identity token"
    digest = digest_of(data)
    async with RegistryClient(token_registry.registry.host, credentials=Credentials(identity_token="rt-bob")) as c:
        await c.push_blob("ci/idtoken", digest, len(data), data)
    posts = [r for r in issuer.requests if r["method"] == "POST"]
    assert posts and all(r["grant_type"] == "refresh_token" and r["account"] == "bob" for r in posts)
    assert not [r for r in issuer.requests if r["method"] == "GET"]


@pytest.mark.interop
async def test_bearer_bad_password_names_the_realm(token_registry: TokenRegistry) -> None:
    async with RegistryClient(token_registry.registry.host, credentials=Credentials("bob", "wrong")) as c:
        with pytest.raises(Unauthorized) as info:
            await c.head_blob("ci/cache", digest_of(b"x"))
    assert token_registry.issuer.host in str(info.value)


@pytest.mark.interop
async def test_bearer_anonymous_token_cannot_push(token_registry: TokenRegistry) -> None:
    data = b"anon"
    async with RegistryClient(token_registry.registry.host, credentials=Credentials()) as c:
        with pytest.raises(Unauthorized) as info:
            await c.push_blob("ci/anon", digest_of(data), len(data), data)
    assert "ci/anon" in str(info.value)


@pytest.mark.interop
async def test_expired_token_is_fetched_again(token_registry: TokenRegistry) -> None:
    issuer = token_registry.issuer
    issuer.expires_in = 1
    data = b"short-lived"
    digest = digest_of(data)
    async with RegistryClient(token_registry.registry.host, credentials=Credentials("bob", "builder")) as c:
        await c.push_blob("ci/short", digest, len(data), data)
        first = len(issuer.requests)  # push_blob asked for pull, then pull+push
        await c.fetch_blob("ci/short", digest)
        assert len(issuer.requests) == first  # still fresh and covering pull: reused
        await asyncio.sleep(1.1)
        await c.fetch_blob("ci/short", digest)
        assert len(issuer.requests) == first + 1  # expired: asked again, before the registry had to refuse it

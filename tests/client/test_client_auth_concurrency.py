"""The Authenticator under concurrency, against real HTTP peers on loopback (``auth_peers``): one token
request however many requests get a 401 at once, scope unions, renewal, revocation, Basic, identity tokens
and credential helpers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from auth_peers import Front, Realm
from client_peers import ServeApp

from lamina.client import Credentials, CredentialStore, RegistryClient, Unauthorized
from lamina.client.scopes import ScopeSet
from lamina.client.tokens import token_lifetime
from lamina.oci import digest_of

DIGEST = digest_of(b"abc")
N = 16


async def _peers(serve_app: ServeApp, **realm_args: object) -> tuple[Realm, Front, str]:
    realm = Realm(users={"alice": "secret"}, **realm_args)  # type: ignore[arg-type]
    realm.host = await serve_app(realm.app())  # the realm is on another port than the registry
    front = Front(realm)
    return realm, front, await serve_app(front.app())


async def test_concurrent_401s_share_one_token_request(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app)
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        sizes = await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N)))
    assert sizes == [3] * N
    assert len(realm.requests) == 1
    assert realm.requests[0]["account"] == "alice"
    assert front.seen.count("none") == N and front.seen.count("Bearer") == N  # each retried exactly once


async def test_declared_scopes_make_one_token_for_every_repository(serve_app: ServeApp) -> None:
    realm, _, host = await _peers(serve_app)
    repos = [f"team/app{i}" for i in range(8)]
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        c.transport.auth.declare([f"repository:{r}:pull,push" for r in repos])
        await asyncio.gather(*(c.head_blob(r, DIGEST) for r in repos for _ in range(2)))
    assert len(realm.requests) == 1
    assert ScopeSet.parse(realm.requests[0]["scopes"]) == ScopeSet.parse(
        [f"repository:{r}:pull,push" for r in repos]
    )


async def test_a_scope_the_token_lacks_gets_a_token_for_the_union(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app)
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        await c.head_blob("base/one", DIGEST)
        await c.head_blob("base/two", DIGEST)
        await c.head_blob("base/one", DIGEST)  # the union token still covers it: no new request
    assert [r["scopes"] for r in realm.requests] == [
        ["repository:base/one:pull"], ["repository:base/one:pull", "repository:base/two:pull"],
    ]
    assert front.seen.count("none") == 1  # after the first challenge, tokens are sent up front


async def test_insufficient_scope_challenge_widens_the_token(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app)
    front.also_needed = ["repository:shared/base:pull"]  # as a mount needs pull on its source
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        c.transport.auth.declare(["repository:team/app:pull"])
        await c.head_blob("team/app", DIGEST)
    assert len(realm.requests) == 1  # the first challenge's scope already named both
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        await c.head_blob("team/app", DIGEST)
        front.also_needed = ["repository:shared/base:pull", "repository:other/x:pull"]
        await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N)))
    assert len(realm.requests) == 3  # one more for the union, shared by the N insufficient_scope answers
    assert ScopeSet.parse(realm.requests[-1]["scopes"]).covers(ScopeSet.parse(front.also_needed))


async def test_realm_refusing_a_declared_scope_falls_back_to_what_is_needed(serve_app: ServeApp) -> None:
    realm, _, host = await _peers(serve_app)
    realm.refuse.add("someone/else")  # some realms refuse the whole request rather than grant less
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        c.transport.auth.declare(["repository:someone/else:pull,push", "repository:team/app:pull,push"])
        assert await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N))) == [3] * N
        await c.head_blob("team/other", DIGEST)  # the refused scope is not asked for again
    assert [ScopeSet.parse(r["scopes"]) for r in realm.requests] == [
        ScopeSet.parse(["repository:someone/else:pull,push", "repository:team/app:pull,push"]),
        ScopeSet.parse(["repository:team/app:pull"]),
        ScopeSet.parse(["repository:team/app:pull,push", "repository:team/other:pull"]),
    ]


async def test_refused_current_token_is_fetched_once_more_for_all(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app)
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        await c.head_blob("team/app", DIGEST)
        front.revoked |= set(realm.tokens)  # the registry stops accepting it before it expires
        assert await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N))) == [3] * N
    assert len(realm.requests) == 2


async def test_refused_again_gives_up_naming_registry_repository_and_scope(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app)
    front.reject_all = True
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        results = await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N)), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    message = str(results[0])
    assert f"{host}/team/app" in message and "repository:team/app:pull" in message and "'alice'" in message
    assert "\n" not in message
    assert len(realm.requests) <= 3  # the first token, one renewal shared by all; never one per request


async def test_token_renewed_before_it_expires(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app, expires_in=2, issued_at_offset=0.0)
    async with RegistryClient(host, credentials=Credentials("alice", "secret")) as c:
        await c.head_blob("team/app", DIGEST)
        await asyncio.sleep(1.7)  # within the last fifth of its 2 s: renew before use
        await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N)))
    assert len(realm.requests) == 2
    assert front.seen.count("none") == 1 and front.seen.count("Bearer") == N + 1  # never a 401 for expiry


def test_token_lifetime_honours_issued_at_and_ignores_a_far_off_clock() -> None:
    now = 1_000_000.0
    assert token_lifetime({"expires_in": 300}, now) == 300
    assert token_lifetime({}, now) == 60
    iso = "1970-01-12T13:45:40.123456789Z"  # now - 60 s, nanosecond fraction as Docker Hub writes it
    assert token_lifetime({"expires_in": 300, "issued_at": iso}, now + 0.123456) == pytest.approx(240, abs=0.01)
    assert token_lifetime({"expires_in": 30, "issued_at": iso}, now) == 30  # already over by its clock: ours
    assert token_lifetime({"expires_in": 30, "issued_at": "not a time"}, now) == 30


async def test_basic_registry_concurrent_first_requests(serve_app: ServeApp) -> None:
    realm, front, host = await _peers(serve_app)
    front.basic = {"AWS": "ecr-password"}
    async with RegistryClient(host, credentials=Credentials("AWS", "ecr-password")) as c:
        assert await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N))) == [3] * N
        await c.head_blob("team/app", DIGEST)
    assert realm.requests == []
    assert front.seen.count("none") == N and front.seen.count("Basic") == N + 1
    async with RegistryClient(host, credentials=Credentials("AWS", "expired")) as c:
        with pytest.raises(Unauthorized) as info:
            await c.head_blob("team/app", DIGEST)
    assert "refused user 'AWS' (Basic)" in str(info.value)
    async with RegistryClient(host, credentials=Credentials()) as c:
        with pytest.raises(Unauthorized) as info:
            await c.head_blob("team/app", DIGEST)
    assert f"no credentials for {host}" in str(info.value) and f"lamina login {host}" in str(info.value)


async def test_identity_token_posts_one_refresh_grant(serve_app: ServeApp) -> None:
    realm, _, host = await _peers(serve_app)
    realm.refresh_tokens["rt-1"] = "alice"
    async with RegistryClient(host, credentials=Credentials(identity_token="rt-1")) as c:
        assert await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N))) == [3] * N
    assert [(r["method"], r["grant_type"]) for r in realm.requests] == [("POST", "refresh_token")]


async def test_credential_helper_runs_once_and_its_failure_is_one_line(
    serve_app: ServeApp, tmp_path: Path, helper_path: Path
) -> None:
    _, _, host = await _peers(serve_app)
    calls = tmp_path / "calls"
    helper = helper_path / "docker-credential-broken"
    helper.write_text(f"#!/bin/sh\necho call >> {calls}\necho 'keychain locked' >&2\necho 'try again' >&2\nexit 3\n")
    helper.chmod(0o755)
    store = CredentialStore(config={"credsStore": "broken"})
    async with RegistryClient(host, credentials=store) as c:
        results = await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N)), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    message = str(results[0])
    assert "docker-credential-broken" in message and "keychain locked try again" in message and "\n" not in message
    assert calls.read_text().count("call") == 1


async def test_credential_helper_answer_is_used_by_every_concurrent_request(
    serve_app: ServeApp, tmp_path: Path, helper_path: Path
) -> None:
    realm, _, host = await _peers(serve_app)
    calls = tmp_path / "calls"
    answer = json.dumps({"Username": "alice", "Secret": "secret"})
    helper = helper_path / "docker-credential-ok"
    helper.write_text(f"#!/bin/sh\necho call >> {calls}\ncat > /dev/null\necho '{answer}'\n")
    helper.chmod(0o755)
    store = CredentialStore(config={"credHelpers": {host: "ok"}})
    async with RegistryClient(host, credentials=store) as c:
        assert await asyncio.gather(*(c.head_blob("team/app", DIGEST) for _ in range(N))) == [3] * N
    assert calls.read_text().count("call") == 1
    assert len(realm.requests) == 1 and realm.requests[0]["account"] == "alice"

"""Authentication and access rules: every rule tried both ways (what it allows and what it refuses)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from opstools import PASSWORDS, Authed, OpsClient, basic, bearer
from regtools import error_code, push_blob, push_image, sha256

from lamina.client.auth import parse_challenge
from lamina.registry.config import ConfigError
from lamina.registry.ops import OpsSettings, parse_ops_setting


def rules(htpasswd: Path) -> str:
    return f"""
[auth]
htpasswd = "{htpasswd}"
groups = {{ ci = ["runner"], admins = ["root"] }}

[[auth.rules]]
repositories = ["apps/*"]
users = ["alice"]
actions = ["pull", "push"]

[[auth.rules]]
repositories = ["team-b/*"]
users = ["bob"]
actions = ["pull", "push"]

[[auth.rules]]
repositories = ["cache/**"]
groups = ["ci"]
actions = ["pull", "push"]

[[auth.rules]]
repositories = ["**"]
groups = ["admins"]
actions = ["pull", "push", "delete"]

[[auth.rules]]
repositories = ["public/**"]
anonymous_pull = true
"""


@pytest.fixture
async def client(make_ops_client: OpsClient, htpasswd: Path):  # type: ignore[no-untyped-def]
    return await make_ops_client(rules(htpasswd))


async def test_anonymous_gets_a_bearer_challenge_naming_the_scope(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/v2/")
    assert response.status == 401 and await error_code(response) == "UNAUTHORIZED"
    challenge = parse_challenge(response.headers["WWW-Authenticate"])
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params["realm"].endswith("/token") and challenge.params["service"] == "lamina-registry"
    response = await client.get("/v2/apps/web/manifests/latest")
    assert response.status == 401
    assert parse_challenge(response.headers["WWW-Authenticate"]).params["scope"] == "repository:apps/web:pull"
    response = await client.post("/v2/apps/web/blobs/uploads/")
    assert parse_challenge(response.headers["WWW-Authenticate"]).params["scope"] == "repository:apps/web:pull,push"


async def test_basic_user_can_push_and_pull_only_where_a_rule_allows(client) -> None:  # type: ignore[no-untyped-def]
    alice = Authed(client, basic("alice"))
    assert (await alice.get("/v2/")).status == 200
    _, digest = await push_image(alice, "apps/web", "v1")
    assert (await alice.get("/v2/apps/web/manifests/v1")).status == 200
    refused = await alice.post("/v2/team-b/x/blobs/uploads/")
    assert refused.status == 403 and await error_code(refused) == "DENIED"
    assert "alice may not push repository team-b/x" in await refused.text()
    assert (await alice.get("/v2/team-b/x/tags/list")).status == 403
    # push is not delete
    denied = await alice.delete(f"/v2/apps/web/manifests/{digest}")
    assert denied.status == 403 and await error_code(denied) == "DENIED"
    # an upload session's status and cancellation need push, like the upload itself
    started = await alice.post("/v2/apps/web/blobs/uploads/")
    location = started.headers["Location"]
    bob = Authed(client, basic("bob"))
    assert (await bob.get(location)).status == 403
    assert (await bob.delete(location)).status == 403
    assert (await alice.get(location)).status == 204
    # '*' stays within one path segment: apps/web/deep is not apps/*
    assert (await alice.post("/v2/apps/web/deep/blobs/uploads/")).status == 403


async def test_wrong_password_and_unknown_user_are_401(client) -> None:  # type: ignore[no-untyped-def]
    for headers in (basic("alice", "nope"), {"Authorization": "Basic " + base64.b64encode(b"mallory:x").decode()},
                    {"Authorization": "Basic !!!"}, {"Authorization": "Digest foo"}):
        response = await client.get("/v2/apps/web/tags/list", headers=headers)
        assert response.status == 401, headers
        assert await error_code(response) == "UNAUTHORIZED"


async def test_groups_grant_their_rules(client) -> None:  # type: ignore[no-untyped-def]
    runner = Authed(client, basic("runner"))
    await push_image(runner, "cache/app/main", "cache")
    assert (await runner.post("/v2/apps/web/blobs/uploads/")).status == 403
    root = Authed(client, basic("root"))
    _, digest = await push_image(root, "anything/at/all", "v1")
    assert (await root.delete(f"/v2/anything/at/all/manifests/{digest}")).status == 202


async def test_anonymous_pull_rule_allows_pull_and_nothing_else(client) -> None:  # type: ignore[no-untyped-def]
    root = Authed(client, basic("root"))
    body, digest = await push_image(root, "public/tools", "v1")
    response = await client.get("/v2/public/tools/manifests/v1")
    assert response.status == 200 and await response.read() == body
    response = await client.post("/v2/public/tools/blobs/uploads/")
    assert response.status == 401
    assert (await client.delete(f"/v2/public/tools/manifests/{digest}")).status == 401
    assert (await client.get("/v2/apps/web/tags/list")).status == 401  # not public
    assert (await client.get("/v2/_catalog")).status == 401


async def test_catalog_needs_a_user_and_lists_only_pullable_repositories(client) -> None:  # type: ignore[no-untyped-def]
    root = Authed(client, basic("root"))
    for name in ("apps/web", "team-b/x", "public/tools"):
        await push_image(root, name, "v1")
    response = await client.get("/v2/_catalog", headers=basic("bob"))
    assert response.status == 200 and (await response.json())["repositories"] == ["public/tools", "team-b/x"]
    response = await client.get("/v2/_catalog", headers=basic("root"))
    assert (await response.json())["repositories"] == ["apps/web", "public/tools", "team-b/x"]
    # a catalog token lists what alice's rules let her pull now (apps/*, the anonymous public/**)
    token = await _token(client, "alice", "registry:catalog:*")
    response = await client.get("/v2/_catalog", headers=bearer(token))
    assert (await response.json())["repositories"] == ["apps/web", "public/tools"]
    token = await _token(client, "alice", "repository:apps/web:pull")  # no catalog scope
    assert (await client.get("/v2/_catalog", headers=bearer(token))).status == 401


async def _token(client, user: str | None, *scopes: str) -> str:  # type: ignore[no-untyped-def]
    params = [("service", "lamina-registry")] + [("scope", s) for s in scopes]
    response = await client.get("/token", params=params, headers=basic(user) if user else {})
    assert response.status == 200, await response.text()
    doc = await response.json()
    assert doc["token"] == doc["access_token"] and doc["expires_in"] == 300
    return str(doc["token"])


async def test_token_carries_only_what_the_rules_allow(client) -> None:  # type: ignore[no-untyped-def]
    token = await _token(client, "alice", "repository:apps/web:pull,push,delete", "repository:team-b/x:pull,push")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["aud"] == "lamina-registry"
    assert claims["access"] == [{"type": "repository", "name": "apps/web", "actions": ["pull", "push"]}]
    assert claims["exp"] - claims["iat"] == 300
    alice = Authed(client, bearer(token))
    await push_image(alice, "apps/web", "v1")
    # the token is for apps/web only: apps/api (which alice's rules allow) needs a new token ...
    response = await alice.get("/v2/apps/api/tags/list")
    assert response.status == 401
    challenge = parse_challenge(response.headers["WWW-Authenticate"])
    assert challenge.params["error"] == "insufficient_scope"
    assert challenge.params["scope"] == "repository:apps/api:pull"
    # ... and team-b/x, which the rules refuse, is DENIED
    response = await alice.post("/v2/team-b/x/blobs/uploads/")
    assert response.status == 403 and await error_code(response) == "DENIED"


async def test_pull_only_token_cannot_push_and_anonymous_token_is_public_pull_only(client) -> None:  # type: ignore[no-untyped-def]
    token = await _token(client, "alice", "repository:apps/web:pull")
    response = await client.post("/v2/apps/web/blobs/uploads/", headers=bearer(token))
    assert response.status == 401 and parse_challenge(response.headers["WWW-Authenticate"]).params["error"]
    anonymous = await _token(client, None, "repository:public/tools:pull,push", "repository:apps/web:pull")
    claims = jwt.decode(anonymous, options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "public/tools", "actions": ["pull"]}]


async def test_token_endpoint_refuses_bad_credentials_and_other_services(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/token", params={"scope": "repository:apps/web:pull"}, headers=basic("alice", "x"))
    assert response.status == 401
    response = await client.get("/token", params={"service": "elsewhere"}, headers=basic("alice"))
    assert response.status == 400 and "elsewhere" in await response.text()
    form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"],
            "scope": "repository:apps/web:pull", "service": "lamina-registry", "client_id": "test"}
    response = await client.post("/token", data=form)
    assert response.status == 200
    form["password"] = "wrong"
    assert (await client.post("/token", data=form)).status == 401


async def test_forged_expired_and_foreign_tokens_are_rejected(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    access = [{"type": "repository", "name": "apps/web", "actions": ["pull", "push"]}]
    now = int(time.time())
    claims = {"iss": "lamina", "sub": "alice", "aud": "lamina-registry", "iat": now, "exp": now + 300, "access": access}
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, other_key, algorithm="ES256")
    key = serialization.load_pem_private_key((tmp_path / "root/auth/token-signing-key.pem").read_bytes(), None)
    expired = jwt.encode({**claims, "exp": now - 100, "iat": now - 400}, key, algorithm="ES256")
    wrong_audience = jwt.encode({**claims, "aud": "another-registry"}, key, algorithm="ES256")
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    for token in (forged, expired, wrong_audience, unsigned, "not.a.jwt"):
        response = await client.get("/v2/apps/web/tags/list", headers=bearer(token))
        assert response.status == 401, token
    good = jwt.encode(claims, key, algorithm="ES256")
    assert (await client.get("/v2/apps/web/tags/list", headers=bearer(good))).status in (200, 404)


async def test_cross_repository_mount_needs_pull_on_the_source(client) -> None:  # type: ignore[no-untyped-def]
    alice, bob = Authed(client, basic("alice")), Authed(client, basic("bob"))
    digest = await push_blob(alice, "apps/web", b"secret layer")
    response = await bob.post("/v2/team-b/x/blobs/uploads/", params={"mount": digest, "from": "apps/web"})
    assert response.status == 202  # an ordinary upload session: no mount without pull on apps/web
    assert (await bob.head(f"/v2/team-b/x/blobs/{digest}")).status == 404
    response = await bob.post("/v2/team-b/x/blobs/uploads/", params={"mount": digest})
    assert response.status == 202  # no automatic mount either: it could read a repository bob may not pull
    assert (await bob.head(f"/v2/team-b/x/blobs/{digest}")).status == 404
    response = await alice.post("/v2/apps/api/blobs/uploads/", params={"mount": digest, "from": "apps/web"})
    assert response.status == 201
    assert (await alice.head(f"/v2/apps/api/blobs/{digest}")).status == 200
    assert sha256(b"secret layer") == digest


async def test_external_issuer_is_trusted_by_public_key(make_ops_client: OpsClient, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "issuer.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    client = await make_ops_client(f"""
[auth.token]
external_public_key = "{pub}"
realm = "https://auth.example/token"
issuer = "corp-issuer"
service = "registry.example"
""")
    response = await client.get("/v2/")
    assert response.status == 401
    assert parse_challenge(response.headers["WWW-Authenticate"]).params["realm"] == "https://auth.example/token"
    assert (await client.get("/token")).status == 404  # lamina issues no tokens in this mode
    now = int(time.time())
    claims = {"iss": "corp-issuer", "sub": "ci", "aud": "registry.example", "iat": now, "exp": now + 60,
              "access": [{"type": "repository", "name": "apps/web", "actions": ["pull", "push"]}]}
    token = jwt.encode(claims, key, algorithm="RS256")
    await push_image(Authed(client, bearer(token)), "apps/web", "v1")
    response = await client.get("/v2/apps/other/tags/list", headers=bearer(token))
    assert response.status == 401
    wrong_issuer = jwt.encode({**claims, "iss": "someone-else"}, key, algorithm="RS256")
    assert (await client.get("/v2/apps/web/tags/list", headers=bearer(wrong_issuer))).status == 401


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[auth]\nhtpasswd = 'x'\n[[auth.rules]]\nrepositories = ['a']\nactions = ['write']\n", "unknown action"),
        ("[auth]\nhtpasswd = 'x'\n[[auth.rules]]\nrepositories = ['a']\ngroups = ['ghost']\n", "unknown group"),
        ("[auth]\nhtpasswd = 'x'\ncolour = 'blue'\n", "auth.colour"),
        ("[auth]\ngroups = {}\n", "set htpasswd"),
        ("[auth]\nhtpasswd = 'x'\n[[auth.rules]]\nusers = ['a']\n", "'repositories'"),
        ("[auth.token]\nexternal_public_key = 'k.pem'\n", "auth.token.realm"),
        ("[auth]\nhtpasswd = 'x'\n[auth.token]\nlifetime_seconds = 1\n", "lifetime_seconds"),
    ],
)
def test_auth_config_errors_name_the_key(text: str, message: str) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=message):
        ops = OpsSettings()
        for key, value in tomllib.loads(text).items():
            ops = parse_ops_setting(ops, key, value)


def test_non_bcrypt_htpasswd_is_a_clear_error(tmp_path: Path) -> None:
    from lamina.registry.auth.htpasswd import Htpasswd

    path = tmp_path / "htpasswd"
    path.write_text("alice:{SHA}abcdef\n")
    with pytest.raises(ConfigError, match=r"alice.*non-bcrypt"):
        Htpasswd(path)

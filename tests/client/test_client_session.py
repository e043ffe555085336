"""Transport choices (scheme, insecure list, Hub host), retry timing, error parsing and the pinned API."""

from __future__ import annotations

import pytest

import lamina.client
from lamina.client import INSECURE_ENV, NotFound, RegistryClient, RegistryError, RetryPolicy, Unauthorized
from lamina.client.errors import error_from_response
from lamina.client.session import api_host, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.3.4.5", True),
     ("[::1]:5000", True), ("::1", True), ("10.0.0.1:5000", False), ("registry.example.com", False),
     ("localhost.example.com:5000", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_scheme_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSECURE_ENV, raising=False)
    assert str(RegistryClient("registry.example.com").transport.base_url) == "https://registry.example.com"
    assert str(RegistryClient("127.0.0.1:5000").transport.base_url) == "http://127.0.0.1:5000"
    assert str(RegistryClient("ci.internal:5000", insecure=True).transport.base_url) == "http://ci.internal:5000"
    assert str(RegistryClient("docker.io").transport.base_url) == "https://registry-1.docker.io"
    monkeypatch.setenv(INSECURE_ENV, "ci.internal:5000, other:80")
    assert RegistryClient("ci.internal:5000").transport.base_url.scheme == "http"
    assert RegistryClient("other:80").transport.base_url.scheme == "http"
    assert RegistryClient("ci.internal:5001").transport.base_url.scheme == "https"
    assert RegistryClient("ci.internal:5000", insecure=False).transport.base_url.scheme == "https"
    assert RegistryClient("localhost:5443", insecure=False).transport.base_url.scheme == "https"


def test_api_host() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"


def test_retry_delay_is_jittered_and_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=2.0)
    delays = [policy.delay(n) for n in range(1, 10) for _ in range(20)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert all(policy.delay(1) <= 0.5 for _ in range(50))
    assert len(set(delays)) > 10


def test_error_from_spec_body_and_from_garbage() -> None:
    body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}'
    err = error_from_response(404, body, registry="r.example.com", repository="a/b", obj="blob sha256:ab")
    assert isinstance(err, NotFound)
    assert (err.status, err.code) == (404, "BLOB_UNKNOWN")
    assert str(err) == 'r.example.com/a/b blob sha256:ab: HTTP 404 BLOB_UNKNOWN: blob unknown to registry ("sha256:ab")'
    html = error_from_response(403, b"<html>nope</html>", registry="r", repository="a", obj="tag list")
    assert isinstance(html, Unauthorized) and html.code == "DENIED" and "<html>nope" in str(html)
    bare = error_from_response(502, b"", registry="r", repository=None, obj=None)
    assert type(bare) is RegistryError and bare.code == "SERVER_ERROR" and "no error body" in str(bare)


def test_public_api_is_pinned() -> None:
    assert sorted(lamina.client.__all__) == [
        "ALL_MANIFEST_TYPES", "ClientPool", "CredentialError", "CredentialStore", "Credentials", "DigestMismatch",
        "FetchedManifest", "INSECURE_ENV", "ManifestInfo", "NoMatchingPlatform", "NotFound", "PushOutcome",
        "RegistryClient", "RegistryError", "RegistryUnreachable", "ResolvedImage", "RetryPolicy",
        "TransferInterrupted", "TransferKind", "TransferStats", "Unauthorized", "insecure_registries_from_env",
        "is_loopback", "normalize_platform", "pull_scope", "push_scope", "resolve_image", "resolve_platform",
        "select_platform",
    ]
    for name in lamina.client.__all__:
        assert hasattr(lamina.client, name)


async def test_client_pool_reuses_one_client_per_host() -> None:
    async with lamina.client.ClientPool(insecure=frozenset({"ci.internal:5000"})) as pool:
        a = pool.get("ci.internal:5000")
        assert pool.get("ci.internal:5000") is a
        assert a.transport.base_url.scheme == "http"
        assert pool.get("registry.example.com") is not a
        assert set(pool.clients()) == {"ci.internal:5000", "registry.example.com"}
        a.stats.add_down("layer", 5)
        pool.get("registry.example.com").stats.add_down("layer", 7)
        pool.get("registry.example.com").stats.add_up("manifest", 3)
        total = pool.stats()
        assert total.downloaded["layer"] == 12 and total.uploaded["manifest"] == 3

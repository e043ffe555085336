"""lamina's token service as the issuer another registry trusts: ``lamina registry token-cert`` and CNCF
distribution 2.8 (``auth: token``, realm = lamina's ``/token``, rootcertbundle = that certificate).

Real processes: ``lamina registry serve`` with ``[auth]``, distribution's ``docker-registry``, and
lamina's client pushing and pulling with Basic credentials, which it trades for tokens at lamina."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from opstools import PASSWORDS
from regtools import sha256

from helpers.binaries import require_binary
from helpers.images import image_manifest, layer_from_files
from helpers.registries import DISTRIBUTION_BINARY, RegistryProcess, start_distribution
from lamina.cli import main
from lamina.client import CredentialStore, RegistryClient
from lamina.client.errors import Unauthorized
from lamina.registry.auth.cert import signing_certificate
from lamina.registry.auth.tokens import TokenError, TokenIssuer, TokenVerifier, load_or_create_key

SERVICE, ISSUER = "dist.test", "lamina-issuer"


def _config(htpasswd: Path) -> str:
    return f"""
[auth]
htpasswd = "{htpasswd}"
[[auth.rules]]
repositories = ["team/**"]
users = ["alice"]
actions = ["pull", "push"]
[[auth.rules]]
repositories = ["team/**"]
users = ["bob"]
actions = ["pull"]
[auth.token]
service = "{SERVICE}"
issuer = "{ISSUER}"
"""


def _token_cert(capsys: pytest.CaptureFixture[str], server: RegistryProcess, *extra: str) -> tuple[int, str, str]:
    """``lamina registry token-cert`` for ``server``'s config file and root (start_lamina's layout)."""
    config = server.root.parent / "config.toml"
    rc = main(["registry", "token-cert", "--config", str(config), "--root", str(server.root), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def _store(host: str, user: str, password: str | None = None) -> CredentialStore:
    auth = base64.b64encode(f"{user}:{PASSWORDS[user] if password is None else password}".encode()).decode()
    return CredentialStore(config={"auths": {host: {"auth": auth}}})


def _distribution(tmp_path: Path, realm_host: str, bundle: Path) -> RegistryProcess:
    require_binary(DISTRIBUTION_BINARY, "docker-registry")
    auth = {"token": {"realm": f"http://{realm_host}/token", "service": SERVICE, "issuer": ISSUER,
                      "rootcertbundle": str(bundle)}}
    return start_distribution(tmp_path, auth=auth)


def test_token_cert_is_the_x5c_of_every_token(make_lamina_registry, htpasswd: Path,  # type: ignore[no-untyped-def]
                                              capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server = make_lamina_registry(config=_config(htpasswd), workers=2)  # each worker builds the certificate
    rc, pem, err = _token_cert(capsys, server)
    assert rc == 0 and err == ""
    assert _token_cert(capsys, server)[1] == pem  # the same bytes every time: a bundle never goes stale
    out = tmp_path / "token.crt"
    assert _token_cert(capsys, server, "--out", str(out)) == (0, "", "")
    assert out.read_text() == pem and out.stat().st_mode & 0o777 == 0o644
    cert = x509.load_pem_x509_certificate(pem.encode())
    key = serialization.load_pem_private_key((server.root / "auth" / "token-signing-key.pem").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc.year == 9999

    auth = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    request = urllib.request.Request(f"{server.url}/token?service={SERVICE}&scope=repository:team/a:pull",
                                     headers={"Authorization": f"Basic {auth}"})
    for _ in range(6):  # new connections, spread over both workers by SO_REUSEPORT
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.load(response)["token"]
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256" and "kid" not in header
        assert [base64.b64decode(c) for c in header["x5c"]] == [cert.public_bytes(serialization.Encoding.DER)]


async def test_distribution_trusts_lamina_token_service(make_lamina_registry, htpasswd: Path,  # type: ignore[no-untyped-def]
                                                        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lamina = make_lamina_registry(config=_config(htpasswd))
    bundle = tmp_path / "lamina-token.crt"
    assert _token_cert(capsys, lamina, "--out", str(bundle))[0] == 0
    registry = await asyncio.to_thread(_distribution, tmp_path / "distribution", lamina.host, bundle)
    image = image_manifest([layer_from_files({"app.txt": b"pushed through lamina's tokens\n"})])
    try:
        async with RegistryClient(registry.host, credentials=_store(registry.host, "alice")) as alice:
            for blob in (image.config, *image.layers):
                await alice.push_blob("team/app", blob.digest, blob.size, blob.data)
            await alice.put_manifest("team/app", "v1", image.manifest.data, image.manifest.media_type)
        async with RegistryClient(registry.host, credentials=_store(registry.host, "bob")) as bob:
            fetched = await bob.get_manifest("team/app", "v1")
            assert fetched.data == image.manifest.data
            layer = image.layers[0]
            dest = tmp_path / "layer"
            await bob.download_blob("team/app", layer.digest, dest, size=layer.size)
            assert dest.read_bytes() == layer.data
            with pytest.raises(Unauthorized):  # lamina grants bob pull only, and distribution holds to it
                await bob.push_blob("team/app", sha256(b"bob's"), 5, b"bob's")
            with pytest.raises(Unauthorized):  # outside every rule: the token carries no access there
                await bob.get_manifest("other/app", "v1")
        wrong = _store(registry.host, "alice", "not-the-password")
        async with RegistryClient(registry.host, credentials=wrong) as client:
            with pytest.raises(Unauthorized):
                await client.get_manifest("team/app", "v1")
    finally:
        registry.stop()


async def test_distribution_refuses_tokens_of_another_key(make_lamina_registry, htpasswd: Path,  # type: ignore[no-untyped-def]
                                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Same issuer and service names, another lamina (another key): its tokens' x5c is not in the bundle."""
    trusted = make_lamina_registry(config=_config(htpasswd))
    other = make_lamina_registry(config=_config(htpasswd))
    bundle = tmp_path / "trusted.crt"
    assert _token_cert(capsys, trusted, "--out", str(bundle))[0] == 0
    registry = await asyncio.to_thread(_distribution, tmp_path / "distribution", other.host, bundle)
    try:
        async with RegistryClient(registry.host, credentials=_store(registry.host, "alice")) as alice:
            with pytest.raises(Unauthorized, match=f"a token from http://{other.host}/token .* was refused"):
                await alice.push_blob("team/app", sha256(b"{}"), 2, b"{}")
    finally:
        registry.stop()


def test_token_cert_refuses_a_registry_without_its_own_token_service(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text('listen = "127.0.0.1:5999"\n')
    external = tmp_path / "external.toml"
    external.write_text(f'[auth.token]\nexternal_public_key = "{tmp_path / "issuer.pem"}"\n'
                        'realm = "https://auth.example/token"\n')
    for config, message in ((plain, "no [auth] section"), (external, "auth.token.external_public_key is set")):
        rc = main(["registry", "token-cert", "--config", str(config), "--root", str(tmp_path / "root")])
        out, err = capsys.readouterr()
        assert rc == 2 and out == ""
        assert err.count("\n") == 1 and message in err and str(config) in err, err
    assert not (tmp_path / "root").exists()  # no key was created for a registry that does not sign


def test_token_cert_creates_the_key_the_server_will_use(tmp_path: Path, htpasswd: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Before the first start: the command creates the key (0600, in a 0700 dir) where the server looks."""
    config = tmp_path / "c.toml"
    config.write_text(_config(htpasswd))
    root = tmp_path / "root"
    rc = main(["registry", "token-cert", "--config", str(config), "--root", str(root)])
    pem, err = capsys.readouterr()
    key_path = root / "auth" / "token-signing-key.pem"
    assert rc == 0 and err.strip() == f"lamina registry: created the token signing key {key_path.absolute()}"
    assert key_path.stat().st_mode & 0o777 == 0o600 and key_path.parent.stat().st_mode & 0o777 == 0o700
    issuer = TokenIssuer(load_or_create_key(key_path), issuer=ISSUER, service=SERVICE, lifetime=60)
    assert issuer.headers["x5c"] == [base64.b64encode(x509.load_pem_x509_certificate(pem.encode()).public_bytes(
        serialization.Encoding.DER)).decode()]
    assert main(["registry", "token-cert", "--config", str(config), "--root", str(root)]) == 0
    assert capsys.readouterr() == (pem, "")  # created once


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["P-256", "P-384"])
def test_lamina_accepts_its_tokens_and_refuses_forgeries(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    issuer = TokenIssuer(key, issuer=ISSUER, service=SERVICE, lifetime=60)
    verifier = issuer.verifier()
    token, _ = issuer.issue("alice", {("repository", "team/a"): frozenset({"pull"})})
    assert jwt.get_unverified_header(token)["alg"] == {256: "ES256", 384: "ES384"}[curve.key_size]
    grant = verifier.verify(token)
    assert grant.subject == "alice" and grant.access == {("repository", "team/a"): frozenset({"pull"})}
    # A token signed by another key but carrying our certificate in x5c: lamina trusts its key, not the header.
    forger = TokenIssuer(ec.generate_private_key(curve), issuer=ISSUER, service=SERVICE, lifetime=60)
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, forger.key, algorithm=issuer.algorithm, headers=issuer.headers)
    with pytest.raises(TokenError, match="Signature verification failed"):
        verifier.verify(forged)
    head, _body, signature = token.split(".")
    tampered = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "root"}).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verifier.verify(f"{head}.{tampered}.{signature}")
    assert signing_certificate(key).public_bytes(serialization.Encoding.DER) == base64.b64decode(
        issuer.headers["x5c"][0])


@pytest.mark.parametrize("kind", ["RS256", "EdDSA"])
def test_external_issuers_keep_working(kind: str) -> None:
    """An external issuer's tokens (with or without x5c/kid headers of their own) verify by its public key."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RS256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    verifier = TokenVerifier(key.public_key(), issuer="corp", service=SERVICE)
    now = int(time.time())
    claims = {"iss": "corp", "sub": "ci", "aud": SERVICE, "iat": now, "exp": now + 60,
              "access": [{"type": "repository", "name": "team/a", "actions": ["pull", "push"]}]}
    token = jwt.encode(claims, key, algorithm=kind, headers={"kid": "corp-key-1"})
    assert verifier.verify(token).access == {("repository", "team/a"): frozenset({"pull", "push"})}
    with pytest.raises(TokenError):
        verifier.verify(jwt.encode({**claims, "aud": "elsewhere"}, key, algorithm=kind))

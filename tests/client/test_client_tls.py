"""lamina's client against registries with a private CA: docker's ``certs.d`` (``$LAMINA_CERTS_D`` in
tests) for CA roots and mutual-TLS client certificates, ``SSL_CERT_FILE``, and one clear line, without
retries, when a certificate does not verify. Real servers on loopback: lamina's registry over HTTPS
(with ``[auth]``, so the token realm is HTTPS too) and a small aiohttp server that demands a client
certificate."""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web
from yarl import URL

from helpers.tlscerts import CertAuthority
from helpers.tlsregistry import TlsRegistry, start_lamina_tls
from lamina.client import RegistryClient
from lamina.client.credentials import Credentials
from lamina.client.errors import RegistryError
from lamina.client.session import RetryPolicy, Transport
from lamina.client.tls import CERTS_D_ENV, ssl_for

USER, PASSWORD = "alice", "wonderland"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No inherited SSL_CERT_FILE/DIR; ``$LAMINA_CERTS_D`` an empty directory unless a test fills it."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    empty = tmp_path / "no-certs.d"
    empty.mkdir()
    monkeypatch.setenv(CERTS_D_ENV, str(empty))
    return empty


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority) -> Iterator[TlsRegistry]:
    """lamina's registry over HTTPS with [auth]: alice may pull and push everything."""
    workdir = tmp_path_factory.mktemp("tls-registry")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    config = (f'[auth]\nhtpasswd = "{htpasswd}"\n'
              f'[[auth.rules]]\nrepositories = ["**"]\nusers = ["{USER}"]\nactions = ["pull", "push"]\n')
    server = start_lamina_tls(workdir, ca, ca.issue("server"), config=config)
    with server:
        yield server


def _blob(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_certs_d_ca_makes_a_loopback_registry_https_and_trusted(
    tls_registry: TlsRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CERTS_D_ENV, str(tls_registry.certs_d))
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _blob(config.encode()),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _blob(b"layer"), "size": 5}],
    }).encode()
    async with RegistryClient(tls_registry.host, credentials=Credentials(USER, PASSWORD)) as client:
        assert client.transport.base_url.scheme == "https"
        await client.push_blob("tls/app", _blob(b"layer"), 5, b"layer")
        await client.push_blob("tls/app", _blob(config.encode()), len(config), config.encode(), kind="config")
        digest = await client.put_manifest("tls/app", "v1", manifest, "application/vnd.oci.image.manifest.v1+json")
        fetched = await client.get_manifest("tls/app", "v1")
        assert fetched.digest == digest and fetched.data == manifest
        # the Bearer token came from the registry's own https realm, verified with the same CA
        assert "https://" in tls_registry.stderr_text() and client.stats.retries == 0


async def test_ssl_cert_file_is_trusted(tls_registry: TlsRegistry, ca: CertAuthority,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_cert))
    async with RegistryClient(tls_registry.host, insecure=False, credentials=Credentials(USER, PASSWORD)) as client:
        await client.ping()


async def test_an_untrusted_certificate_is_one_line_and_never_retried(tls_registry: TlsRegistry) -> None:
    async with RegistryClient(tls_registry.host, insecure=False, credentials=Credentials(USER, PASSWORD)) as client:
        with pytest.raises(RegistryError) as info:
            await client.ping()
        assert client.stats.requests == 1 and client.stats.retries == 0
    message = str(info.value)
    assert "\n" not in message and info.value.code == "TLS_ERROR"
    assert "does not verify (unable to get local issuer certificate)" in message
    assert f"/etc/docker/certs.d/{tls_registry.host}/ca.crt" in message and "SSL_CERT_FILE" in message


def test_loopback_stays_plain_http_without_a_certs_d_directory() -> None:
    assert Transport("127.0.0.1:5000").base_url.scheme == "http"
    assert Transport("registry.example.com:5000").base_url.scheme == "https"


def test_a_context_is_built_once_per_host_and_only_when_there_is_something_to_add(
    clean_env: Path, ca: CertAuthority
) -> None:
    assert ssl_for(URL("http://127.0.0.1:5000/v2/")) is True
    assert ssl_for(URL("https://other.example.com/v2/")) is True  # aiohttp's default context
    (clean_env / "registry.example.com").mkdir()
    (clean_env / "registry.example.com" / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
    first = ssl_for(URL("https://registry.example.com/v2/x/blobs/uploads/"))
    assert isinstance(first, ssl.SSLContext)
    assert ssl_for(URL("https://registry.example.com:443/token")) is first
    assert ssl_for(URL("https://registry.example.com:5000/v2/")) is True  # another HOST:PORT, another directory


class _MutualTls:
    """An aiohttp server answering GET /v2/ only to clients presenting a certificate from ``ca``."""

    def __init__(self, ca: CertAuthority) -> None:
        server = ca.issue("mtls-server")
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.ca_cert))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_cert_chain(str(server.cert), str(server.key))
        self.clients: list[str] = []

    async def version(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        self.clients.append(dict(pair[0] for pair in peer["subject"])["commonName"] if peer else "")
        return web.json_response({})


@pytest.fixture
async def mtls_server(ca: CertAuthority) -> AsyncIterator[tuple[str, _MutualTls]]:
    peer = _MutualTls(ca)
    app = web.Application()
    app.router.add_get("/v2/", peer.version)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=peer.context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}", peer
    await runner.cleanup()


async def test_client_certificate_from_certs_d_for_mutual_tls(
    mtls_server: tuple[str, _MutualTls], ca: CertAuthority, clean_env: Path
) -> None:
    host, peer = mtls_server
    directory = clean_env / host
    directory.mkdir()
    (directory / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
    no_retry = RetryPolicy(attempts=1)
    async with RegistryClient(host, credentials=Credentials(), retry=no_retry) as client:
        with pytest.raises(RegistryError):  # the server wants a client certificate: none yet
            await client.ping()
    assert peer.clients == []

    builder = ca.issue("builder", client=True)
    (directory / "client.cert").write_bytes(builder.cert.read_bytes())
    async with RegistryClient(host, credentials=Credentials(), retry=no_retry) as client:
        with pytest.raises(RegistryError) as info:  # docker's rule: NAME.cert needs NAME.key beside it
            await client.ping()
    assert info.value.code == "TLS_CONFIG" and f"client certificate {directory / 'client.cert'} has no key" in str(
        info.value)

    (directory / "client.key").write_bytes(builder.key.read_bytes())
    async with RegistryClient(host, credentials=Credentials(), retry=no_retry) as client:
        await client.ping()
    assert peer.clients == ["builder"]

"""``lamina registry serve --tls-cert --tls-key``: HTTPS from every worker, certificates replaced while
serving (a new connection gets the new chain, a bad replacement keeps the old one with one log line),
a clear one-line refusal at start for a missing, unreadable or mismatched pair, and skopeo pushing and
pulling through a private CA with ``--dest-cert-dir`` / ``--src-cert-dir``. Real processes, loopback."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from helpers.binaries import require_binary
from helpers.images import image_manifest, layer_from_files, skopeo, write_layout
from helpers.tlscerts import CertAuthority
from helpers.tlsregistry import TlsRegistry, peer_certificate, start_lamina_tls
from lamina.registry.tls import TlsError, cleartext_warning, read_pair

NOT_RELOADED = "TLS certificate not reloaded"


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "ca")


def _serve_rc(tmp_path: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lamina.cli", "registry", "serve", "--listen", "127.0.0.1:1", "--root",
            str(tmp_path / "root"), "--workers", "1", *args]
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        argv += ["--config", str(tmp_path / "c.toml")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _await_certificate(server: TlsRegistry, der: bytes, connections: int = 8, timeout: float = 10.0) -> None:
    """Until ``connections`` new connections in a row (spread over the workers) are given ``der``."""
    assert server.ca is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(peer_certificate(server.port, server.ca.ca_cert) == der for _ in range(connections)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no switch to the new certificate within {timeout} s:\n{server.stderr_text()}")


def _log_lines(server: TlsRegistry, marker: str) -> list[str]:
    return [line for line in server.stderr_text(100_000).splitlines() if marker in line]


def test_start_refuses_a_missing_mismatched_or_lonely_pair_in_one_line(tmp_path: Path, ca: CertAuthority) -> None:
    a, b = ca.issue("a"), ca.issue("b")
    cases = [
        (("--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(a.key)),
         f"tls_cert {tmp_path / 'nope.crt'}: cannot read it: No such file or directory"),
        (("--tls-cert", str(a.cert), "--tls-key", str(b.key)),
         f"tls_key {b.key} does not match tls_cert {a.cert}"),
        (("--tls-cert", str(a.cert), "--tls-key", str(tmp_path)),
         f"tls_key {tmp_path}: cannot read it: Is a directory"),
        (("--tls-cert", str(a.cert)), "tls_cert is set but tls_key is not"),
    ]
    for args, expected in cases:
        proc = _serve_rc(tmp_path, *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
        assert proc.stderr.startswith("lamina registry: ")
    proc = _serve_rc(tmp_path, config=f'tls_key = "{a.key}"\ntls_reload_seconds = 0\n')
    assert proc.returncode == 2 and "tls_reload_seconds: expected a number of seconds from 0.1" in proc.stderr


def test_read_pair_names_the_file_and_the_fix(tmp_path: Path, ca: CertAuthority) -> None:
    a = ca.issue("a")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(TlsError, match=rf"tls_cert {garbage}: not a PEM certificate chain"):
        read_pair(garbage, a.key)
    with pytest.raises(TlsError, match=rf"tls_key {a.cert}: not a PEM private key"):
        read_pair(a.cert, a.cert)
    key = serialization.load_pem_private_key(a.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TlsError, match=rf"tls_key {encrypted}: the private key is encrypted"):
        read_pair(a.cert, encrypted)
    chain = tmp_path / "chain.crt"  # leaf first, then the CA: a chain as ACME clients write it
    chain.write_bytes(a.cert.read_bytes() + ca.ca_cert.read_bytes())
    assert read_pair(chain, a.key).subject == "CN=a"


def test_every_worker_reloads_a_new_pair_and_keeps_the_old_one_when_the_new_one_is_bad(
    tmp_path: Path, ca: CertAuthority
) -> None:
    a, b, c, d = (ca.issue(name) for name in "abcd")
    server = start_lamina_tls(tmp_path / "reg", ca, a, config="tls_reload_seconds = 0.2\n", workers=2)
    with server:
        assert server.stderr_text().count("https://") == 1  # the start line says https
        _await_certificate(server, a.der, timeout=0.1)
        b.install(server.cert_path, server.key_path)
        _await_certificate(server, b.der)
        deadline = time.monotonic() + 5  # each worker logs its own reload
        while len(_log_lines(server, "TLS certificate reloaded")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_log_lines(server, "TLS certificate reloaded")) == 2, server.stderr_text()

        # A certificate whose key is not the one beside it: refused, b goes on serving, one line per worker.
        server.cert_path.with_name("new.crt").write_bytes(c.cert.read_bytes())
        server.cert_path.with_name("new.crt").replace(server.cert_path)
        deadline = time.monotonic() + 5
        while len(_log_lines(server, NOT_RELOADED)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.6)  # three more polls: nothing changed, nothing more is logged
        lines = _log_lines(server, NOT_RELOADED)
        assert len(lines) == 2, server.stderr_text()
        assert f"tls_key {server.key_path} does not match tls_cert {server.cert_path}" in lines[0]
        assert "still serving the previous one (CN=b, valid until" in lines[0]
        _await_certificate(server, b.der, timeout=0.1)

        # A half-written certificate file: refused the same way.
        server.cert_path.write_bytes(d.cert.read_bytes()[:150])
        deadline = time.monotonic() + 5
        while len(_log_lines(server, NOT_RELOADED)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("not a PEM certificate chain" in line for line in _log_lines(server, NOT_RELOADED)[2:])
        _await_certificate(server, b.der, timeout=0.1)
        assert _status(f"{server.url}/v2/", ca) == 200

        # The watcher survives refusals: a good pair written in place (not renamed) is picked up.
        d.install(server.cert_path, server.key_path)
        _await_certificate(server, d.der)
        assert server.running


def _status(url: str, ca: CertAuthority) -> int:
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return int(resp.status)


@pytest.mark.interop
def test_skopeo_pushes_and_pulls_through_a_private_ca(tmp_path: Path, ca: CertAuthority, skopeo_bin: str) -> None:
    server = start_lamina_tls(tmp_path / "reg", ca, ca.issue("server"))
    layer = layer_from_files({"hello.txt": b"over TLS\n"})
    image = image_manifest([layer])
    layout = write_layout(tmp_path / "layout", image.manifest, [image.config, layer])
    ref = f"docker://{server.host}/tls/hello:v1"
    with server:
        with pytest.raises(RuntimeError, match="certificate signed by unknown authority"):
            skopeo("copy", f"oci:{layout}:latest", ref)  # the private CA is not trusted by default
        skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(server.cert_dir), f"oci:{layout}:latest", ref)
        inspect = skopeo("inspect", "--raw", "--cert-dir", str(server.cert_dir), ref).stdout
        assert inspect.encode() == image.manifest.data
        out = tmp_path / "pulled"
        skopeo("copy", "--src-cert-dir", str(server.cert_dir), ref, f"oci:{out}:v1")
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == image.manifest.digest
        assert (out / "blobs" / "sha256" / layer.digest.split(":", 1)[1]).read_bytes() == layer.data


def test_cleartext_warning_only_for_auth_beyond_loopback_without_tls() -> None:
    warning = cleartext_warning("0.0.0.0", tls=False, auth=True)
    assert warning is not None and "WITHOUT TLS" in warning and "tls_cert" in warning
    assert cleartext_warning("0.0.0.0", tls=True, auth=True) is None
    assert cleartext_warning("0.0.0.0", tls=False, auth=False) is None  # the no-auth warning covers that one
    assert cleartext_warning("127.0.0.1", tls=False, auth=True) is None
    assert cleartext_warning("localhost", tls=False, auth=True) is None


@pytest.mark.interop
def test_podman_pulls_and_pushes_through_a_private_ca(tmp_path: Path, ca: CertAuthority, skopeo_bin: str) -> None:
    podman = require_binary("podman", "podman")
    server = start_lamina_tls(tmp_path / "reg", ca, ca.issue("server"))
    layer = layer_from_files({"hello.txt": b"podman over TLS\n"})
    image = image_manifest([layer])
    layout = write_layout(tmp_path / "layout", image.manifest, [image.config, layer])
    runroot = Path(tempfile.mkdtemp(prefix="lamina-podman-"))  # podman wants a runroot under 50 characters
    storage = ["--root", str(tmp_path / "storage"), "--runroot", str(runroot), "--storage-driver", "vfs"]
    with server, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, runroot, True)
        skopeo("copy", "--dest-cert-dir", str(server.cert_dir), f"oci:{layout}:latest",
               f"docker://{server.host}/tls/podman:v1")
        for args in (["pull", f"{server.host}/tls/podman:v1"],
                     ["push", f"{server.host}/tls/podman:v1", f"{server.host}/tls/pushed:v1"]):
            proc = subprocess.run([podman, *storage, args[0], "--cert-dir", str(server.cert_dir), *args[1:]],
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, proc.stderr
        pushed = json.loads(skopeo("inspect", "--raw", "--cert-dir", str(server.cert_dir),
                                   f"docker://{server.host}/tls/pushed:v1").stdout)
        assert pushed["config"]["digest"] == image.config.digest and len(pushed["layers"]) == 1

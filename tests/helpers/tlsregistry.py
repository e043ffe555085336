"""``lamina registry serve`` over HTTPS for tests: a private CA's server certificate, a certs.d directory
for the clients (docker's layout, also skopeo's ``--cert-dir``), and helpers that look at the
certificate a new connection is given."""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers.registries import RegistryProcess, ServerStartError, _start_on_free_port
from helpers.tlscerts import CertAuthority, IssuedCert

__all__ = ["TlsRegistry", "peer_certificate", "start_lamina_tls"]


@dataclass
class TlsRegistry(RegistryProcess):
    """A lamina registry serving HTTPS with ``cert_path``/``key_path``; ``certs_d`` holds ``HOST:PORT/ca.crt``."""

    ca: CertAuthority | None = field(default=None, repr=False)
    cert_path: Path = Path()
    key_path: Path = Path()
    certs_d: Path = Path()

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def cert_dir(self) -> Path:
        """``certs_d/HOST:PORT``: what docker reads, and skopeo's ``--dest-cert-dir`` / ``--src-cert-dir``."""
        return self.certs_d / self.host

    def _wait_ready(self, timeout: float) -> None:
        assert self.ca is not None
        context = ssl.create_default_context(cafile=str(self.ca.ca_cert))
        deadline, last_error = time.monotonic() + timeout, "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if (code := self.process.poll()) is not None:
                raise ServerStartError(f"{self.name} exited with status {code}:\n{self.stderr_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
                last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise ServerStartError(f"{self.name} did not answer on {self.url} ({last_error}):\n{self.stderr_text()}")


def start_lamina_tls(workdir: Path, ca: CertAuthority, pair: IssuedCert, *, config: str = "",
                     workers: int = 1) -> TlsRegistry:
    """Serve HTTPS with a copy of ``pair`` at ``workdir/server.crt``/``server.key`` (tests replace them),
    at INFO log level; ``config`` is extra settings-file text."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "server.crt", workdir / "server.key"
    pair.install(cert, key)
    config_path = workdir / "config.toml"
    config_path.write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "LAMINA_REGISTRY_ROOT"}

    def make(port: int) -> TlsRegistry:
        argv = [sys.executable, "-m", "lamina.cli", "registry", "serve", "--listen", f"127.0.0.1:{port}",
                "--root", str(workdir / "root"), "--workers", str(workers), "--config", str(config_path),
                "--tls-cert", str(cert), "--tls-key", str(key), "--log-level", "INFO"]
        certs_d = workdir / "certs.d"
        (certs_d / f"127.0.0.1:{port}").mkdir(parents=True, exist_ok=True)
        (certs_d / f"127.0.0.1:{port}" / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
        return TlsRegistry("lamina registry (TLS)", argv, port, workdir / "root", workdir / "server.log", env=env,
                           ca=ca, cert_path=cert, key_path=key, certs_d=certs_d)

    server = _start_on_free_port(make)
    assert isinstance(server, TlsRegistry)
    return server


def peer_certificate(port: int, ca_file: Path) -> bytes:
    """The DER certificate a new verified TLS connection to 127.0.0.1:PORT is given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der

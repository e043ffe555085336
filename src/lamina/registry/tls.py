"""HTTPS for ``lamina registry serve``: the server's certificate pair, checked at start and reloaded live.

Each worker process owns one :class:`ssl.SSLContext` that its listening socket wraps every new
connection with. :class:`CertificateReloader` polls the two files (``os.stat``: device, inode, mtime,
size, so an atomic rename, a symlink swap as Kubernetes does it, or an in-place rewrite are all seen)
and loads a changed pair into that same context: new connections get the new chain, open ones keep
theirs. A pair is read once, checked with ``cryptography`` (PEM certificate chain, unencrypted private
key, the key matching the first certificate) and only then handed to OpenSSL from memory (a memfd),
so a half-written or mismatched replacement never reaches the live context: it is logged in one line
and the old pair keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

__all__ = ["CertificateReloader", "TlsError", "attach_reloader", "cleartext_warning", "read_pair"]

log = logging.getLogger("lamina.registry.tls")

_Signature = tuple[tuple[int, int, int, int] | None, ...]


class TlsError(ValueError):
    """The certificate or key cannot be used; the message names the file and what to do."""


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """A checked pair, as bytes: the PEM chain (leaf first) and the PEM private key."""

    chain: bytes
    key: bytes
    subject: str
    not_after: datetime.datetime

    def describe(self) -> str:
        return f"{self.subject}, valid until {self.not_after:%Y-%m-%d %H:%M} UTC"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def read_pair(cert_path: Path, key_path: Path) -> CertificatePair:
    """Read and check a certificate chain and its private key; TlsError naming the file otherwise."""
    chain = _read(cert_path, "tls_cert")
    key_bytes = _read(key_path, "tls_key")
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise TlsError(
            f"tls_cert {cert_path}: not a PEM certificate chain (expected -----BEGIN CERTIFICATE----- blocks, "
            "the server's certificate first, then its intermediates)"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:
        raise TlsError(
            f"tls_key {key_path}: the private key is encrypted; give an unencrypted PEM key "
            f"(openssl pkey -in {key_path} -out KEY.pem), readable only by the registry's user"
        ) from None
    except ValueError:
        raise TlsError(f"tls_key {key_path}: not a PEM private key (expected -----BEGIN PRIVATE KEY-----)") from None
    leaf = certificates[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):  # type: ignore[arg-type]
        raise TlsError(
            f"tls_key {key_path} does not match tls_cert {cert_path} (the first certificate in the file must be "
            "the one issued for this key): give the key the certificate was issued for"
        )
    return CertificatePair(chain, key_bytes, leaf.subject.rfc4514_string() or "(no subject)",
                           leaf.not_valid_after_utc)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def _load_into(context: ssl.SSLContext, pair: CertificatePair) -> None:
    """Give OpenSSL the checked bytes themselves (never the paths, which may change in between)."""
    cert_fd, key_fd = _memfd("lamina-tls-cert", pair.chain), _memfd("lamina-tls-key", pair.key)
    try:
        context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}", password=b"")
    finally:
        os.close(cert_fd)
        os.close(key_fd)


def _server_context(pair: CertificatePair) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    _load_into(context, pair)
    return context


class CertificateReloader:
    """One worker's server context and the files it came from; :meth:`poll` reloads a changed pair."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path, self.key_path = cert_path, key_path
        self._signature = self._stat()
        self.pair = read_pair(cert_path, key_path)
        try:
            self.context = _server_context(self.pair)
        except ssl.SSLError as exc:  # a key type or chain OpenSSL refuses although it parses
            raise TlsError(f"tls_cert {cert_path} / tls_key {key_path}: OpenSSL refuses the pair: {exc}") from None

    def _stat(self) -> _Signature:
        out: list[tuple[int, int, int, int] | None] = []
        for path in (self.cert_path, self.key_path):
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def poll(self) -> bool | None:
        """Reload if either file changed since the last look: True = reloaded, False = the new pair was
        refused (one warning line; the old one keeps serving), None = nothing changed."""
        signature = self._stat()
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            pair = read_pair(self.cert_path, self.key_path)
            _server_context(pair)  # OpenSSL accepts it on a scratch context before the live one sees it
        except (TlsError, ssl.SSLError, OSError) as exc:
            log.warning("TLS certificate not reloaded: %s; still serving the previous one (%s)",
                        " ".join(str(exc).split()), self.pair.describe())
            return False
        try:
            _load_into(self.context, pair)
        except OSError as exc:  # out of file descriptors or memory: put the old pair back whole
            log.warning("TLS certificate not reloaded: %s; still serving the previous one (%s)", exc,
                        self.pair.describe())
            _load_into(self.context, self.pair)
            return False
        self.pair = pair
        log.info("TLS certificate reloaded from %s: %s", self.cert_path, pair.describe())
        return True

    async def watch(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set():
                self.poll()


def attach_reloader(app: web.Application, reloader: CertificateReloader, interval: float) -> None:
    """Run ``reloader.watch`` for as long as ``app`` serves."""

    async def watching(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(reloader.watch(stop, interval))
        yield
        stop.set()
        await task

    app.cleanup_ctx.append(watching)


def cleartext_warning(host: str, tls: bool, auth: bool) -> str | None:
    """The start-up warning for credentials sent in clear: [auth] on a non-loopback address without TLS."""
    from lamina.client.session import is_loopback

    if tls or not auth or is_loopback(host):
        return None
    return (
        f"WARNING: listening on {host} with [auth] but WITHOUT TLS: passwords and tokens cross the network in "
        "clear. Set tls_cert and tls_key, or put a TLS-terminating proxy in front (docs/registry.md, TLS)."
    )

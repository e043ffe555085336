"""Which certificates the client trusts and presents for an ``https`` registry: docker's ``certs.d``.

Docker's convention (and podman's, under ``/etc/containers/certs.d``): ``CERTS_D/HOST[:PORT]/`` holds
the registry's private CA roots (every ``*.crt``, e.g. ``ca.crt``) and client certificates for mutual
TLS (``NAME.cert`` with its key ``NAME.key``). The directory is named exactly as the registry appears
in image references: ``registry.example.com:5000``, or ``registry.example.com`` for port 443.
``CERTS_D`` is ``$LAMINA_CERTS_D``, else ``/etc/docker/certs.d``. The CA roots are trusted besides the
system's (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` replace those, as OpenSSL reads them).

A context is built only for an ``https`` origin, once per ``HOST[:PORT]`` (again if files are added to or
removed from its directory, or the environment changes), and only when there is something to add:
otherwise aiohttp's default context (made once at import) serves.
A loopback registry, spoken to in plain HTTP by default, is spoken to in HTTPS when it has a
``certs.d`` directory: :func:`has_certs_dir`.
"""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path

from .errors import RegistryError
from .urls import URL

__all__ = ["CERTS_D_ENV", "DEFAULT_CERTS_D", "certs_dir", "has_certs_dir", "ssl_for"]

CERTS_D_ENV = "LAMINA_CERTS_D"
DEFAULT_CERTS_D = "/etc/docker/certs.d"


def certs_dir(registry: str) -> Path:
    """``CERTS_D/HOST[:PORT]`` for a registry name as it appears in references."""
    return Path(os.environ.get(CERTS_D_ENV) or DEFAULT_CERTS_D) / registry


def has_certs_dir(registry: str) -> bool:
    return certs_dir(registry).is_dir()


def _authority(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.explicit_port is None or url.port == 443 else f"{host}:{url.port}"


def ssl_for(url: URL) -> ssl.SSLContext | bool:
    """The SSL argument for a request to ``url``: a context for an https origin with a ``certs.d``
    directory or an ``SSL_CERT_FILE``/``SSL_CERT_DIR`` environment, else True (aiohttp's default)."""
    if url.scheme != "https":
        return True
    authority = _authority(url)
    directory = certs_dir(authority)
    try:
        st = os.stat(directory)
        version = (st.st_ino, st.st_mtime_ns)  # a file added or removed there builds the context again
    except OSError:
        version = None
    return _context(directory, version, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _context(directory: Path, version: tuple[int, int] | None, cert_file: str | None,
             cert_dir: str | None) -> ssl.SSLContext | bool:
    authority = directory.name
    try:
        entries = sorted(directory.iterdir()) if version is not None else []
    except OSError as exc:
        raise _error(authority, f"cannot list {directory}: {exc.strerror or exc}") from None
    if not entries and cert_file is None and cert_dir is None:
        return True
    context = ssl.create_default_context()  # the system's roots, or SSL_CERT_FILE / SSL_CERT_DIR's
    for entry in entries:
        try:
            if entry.suffix == ".crt":
                context.load_verify_locations(cafile=str(entry))
            elif entry.suffix == ".cert":
                key = entry.with_suffix(".key")
                if not key.exists():
                    raise _error(authority, f"client certificate {entry} has no key {key} beside it (docker's rule)")
                context.load_cert_chain(str(entry), str(key), password=b"")
        except (ssl.SSLError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _error(authority, f"cannot use {entry}: {reason} (expected a PEM certificate"
                                    f"{', with an unencrypted PEM key' if entry.suffix == '.cert' else ''})") from None
    return context


def _error(authority: str, message: str) -> RegistryError:
    return RegistryError(None, "TLS_CONFIG", message, registry=authority)

"""Docker registry bearer tokens: short-lived JWTs (distribution's "Token Authentication Specification").

Claims: ``iss``, ``sub`` (the account), ``aud`` (the service), ``exp``/``nbf``/``iat``, ``jti`` and
``access: [{"type": "repository", "name": ..., "actions": [...]}]``. lamina signs with its own EC P-256
key (ES256; ES384/ES512 for a P-384/P-521 key), created on first start under the storage root, or trusts
an external issuer by public key (ES256/RS256/EdDSA, whichever the key is). The key file is created with an
atomic link(2), so worker processes starting at once all end up with the same key. The header carries the
key's certificate as ``x5c`` (:mod:`.cert`), so CNCF distribution can verify the tokens too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..settingerror import ConfigError
from .cert import signing_certificate, x5c_chain

__all__ = ["Grant", "TokenError", "TokenIssuer", "TokenVerifier", "load_or_create_key"]

Access = Mapping[tuple[str, str], frozenset[str]]  # (type, name) -> actions


_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)  # ES256, ES384, ES512


class TokenError(Exception):
    """A bearer token that is malformed, badly signed, expired or for another service."""


@dataclass(frozen=True, slots=True)
class Grant:
    subject: str
    access: Access


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load the PEM private key at ``path``, creating a new P-256 key there (mode 0600) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            os.write(fd, pem)
            os.fsync(fd)
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another worker won: use its key
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"auth.token.signing_key {path}: cannot load a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _CURVES):
        raise ConfigError(f"auth.token.signing_key {path}: not an EC private key on P-256, P-384 or P-521; "
                          "point the setting at one (or at a missing file: lamina then creates a P-256 key there)")
    return key


def _algorithm(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, "ES256")
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ConfigError(f"unsupported public key type {type(key).__name__}: use EC, RSA or Ed25519")


def access_claim(access: Access) -> list[dict[str, object]]:
    return [
        {"type": kind, "name": name, "actions": sorted(actions)}
        for (kind, name), actions in sorted(access.items())
        if actions
    ]


class TokenIssuer:
    def __init__(self, key: ec.EllipticCurvePrivateKey, *, issuer: str, service: str, lifetime: int) -> None:
        self.key = key
        self.issuer = issuer
        self.service = service
        self.lifetime = lifetime
        self.algorithm = _algorithm(key.public_key())
        self.headers = {"x5c": x5c_chain(signing_certificate(key))}

    def issue(self, subject: str, access: Access, now: float | None = None) -> tuple[str, int]:
        """A signed token and its lifetime in seconds."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "iat": issued,
            "nbf": issued - 5,
            "exp": issued + self.lifetime,
            "jti": secrets.token_hex(12),
            "access": access_claim(access),
        }
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=self.headers), self.lifetime

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.key.public_key(), issuer=self.issuer, service=self.service)


def load_public_key(path: Path) -> object:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"auth.token.external_public_key {path}: {exc.strerror or exc}") from None
    try:
        if b"CERTIFICATE" in data:
            from cryptography import x509

            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"auth.token.external_public_key {path}: not a PEM key or certificate: {exc}") from None


class TokenVerifier:
    def __init__(self, public_key: object, *, issuer: str, service: str) -> None:
        self.public_key = public_key
        self.algorithm = _algorithm(public_key)
        self.issuer = issuer
        self.service = service

    def verify(self, token: str) -> Grant:
        try:
            claims = jwt.decode(
                token,
                self.public_key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
                audience=self.service,
                issuer=self.issuer,
                leeway=5,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"bearer token rejected: {exc}") from None
        return Grant(str(claims.get("sub") or ""), _parse_access(claims.get("access")))


def _parse_access(value: object) -> Access:
    access: dict[tuple[str, str], frozenset[str]] = {}
    if not isinstance(value, Sequence) or isinstance(value, str):
        return access
    for entry in value:
        if not isinstance(entry, Mapping):
            continue
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list):
            key = (kind, name)
            access[key] = access.get(key, frozenset()) | frozenset(a for a in actions if isinstance(a, str))
    return access

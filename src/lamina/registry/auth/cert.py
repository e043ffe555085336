"""The certificate of the token signing key: what another registry trusts to accept lamina's tokens.

CNCF distribution (``auth: token``) finds a token's signing key through the JWT header: an ``x5c``
chain verified against its ``rootcertbundle``, a ``jwk``, or a ``kid`` looked up among the bundle's
keys. The ``kid`` form is version-dependent (distribution 2.x reads a libtrust fingerprint, 3.x an RFC
7638 thumbprint, and some 3.x releases look at ``kid`` before ``x5c``), so lamina's tokens carry
``x5c`` alone: the one certificate below, which ``lamina registry token-cert`` prints for the bundle.

Go's chain builder (distribution 2.8 runs on Go 1.19) accepts a self-signed leaf only when it is
byte-for-byte a root of the bundle: a second certificate with the same subject and key is skipped as
"already in the chain". So the certificate is a pure function of the key, signed with deterministic
ECDSA (RFC 6979): every worker, every restart and every ``token-cert`` run produce the same bytes.
It never expires (RFC 5280 4.1.2.5's ``99991231235959Z``); rotating the key replaces it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SUBJECT", "signing_certificate", "x5c_chain"]

SUBJECT = "lamina registry token signing key"
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)  # "no well-defined expiration"


def signing_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """The self-signed CA certificate of ``key``: identical bytes for the same key, every time."""
    public = key.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    serial = int.from_bytes(hashlib.sha256(spki).digest()[:19], "big") | 1  # positive, under 20 octets
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SUBJECT)])
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )


def x5c_chain(certificate: x509.Certificate) -> list[str]:
    """The JWS ``x5c`` header value (RFC 7515 4.1.6): base64 (not URL-safe) DER, leaf first."""
    return [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]

"""A real Docker token realm we run in the test process: checks Basic or refresh-token credentials and
signs ES256 JWTs carrying an ``x5c`` chain, which CNCF distribution's ``auth: token`` accepts when its
``rootcertbundle`` holds :meth:`TokenIssuer.write_bundle`'s certificate; and ``serve`` for aiohttp apps.

Shared by the client tests and the builder's authenticated-registry tests."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = ["TokenIssuer", "serve"]


async def serve(app: web.Application) -> tuple[str, web.AppRunner]:
    """Serve ``app`` on 127.0.0.1 at a free port; returns ``host:port`` and the runner to clean up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    return f"127.0.0.1:{sockets[0].getsockname()[1]}", runner


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenIssuer:
    """A real Docker token realm: checks Basic or refresh-token credentials, signs ES256 JWTs with x5c."""

    users: dict[str, str]
    refresh_tokens: dict[str, str]  # refresh token -> account
    service: str = "lamina-test"
    issuer: str = "lamina-test-issuer"
    expires_in: int = 300
    requests: list[dict[str, Any]] = field(default_factory=list)
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    denied_pull: set[str] = field(default_factory=set)  # repositories nobody may pull
    host: str = ""

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def write_bundle(self, path: Path) -> None:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def sign(self, account: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            if name in self.denied_pull:
                wanted = []
            access.append({"type": kind, "name": name, "actions": wanted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.issuer, "sub": account, "aud": self.service, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def app(self) -> web.Application:
        async def get_token(request: web.Request) -> web.Response:
            scopes = request.query.getall("scope", [])
            account = ""
            header = request.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(user) != password:
                    return web.json_response({"details": "bad credentials"}, status=401)
                account = user
            self.requests.append({"method": "GET", "scopes": scopes, "account": account,
                                  "service": request.query.get("service")})
            if not account:
                return web.json_response({"token": self.sign("", []), "expires_in": self.expires_in})
            return web.json_response({"token": self.sign(account, scopes), "expires_in": self.expires_in})

        async def post_token(request: web.Request) -> web.Response:
            form = await request.post()
            scopes = str(form.get("scope", "")).split()
            account = self.refresh_tokens.get(str(form.get("refresh_token", "")))
            self.requests.append({"method": "POST", "scopes": scopes, "account": account,
                                  "grant_type": form.get("grant_type"), "service": form.get("service")})
            if form.get("grant_type") != "refresh_token" or account is None:
                return web.json_response({"error": "invalid_grant"}, status=401)
            return web.json_response({"access_token": self.sign(account, scopes), "expires_in": self.expires_in})

        app = web.Application()
        app.router.add_get("/token", get_token)
        app.router.add_post("/token", post_token)
        return app

"""Real HTTP peers for the Authenticator's tests: a token realm that counts its requests, and a registry
front that checks Bearer tokens (or Basic credentials) on blob HEADs, each on its own loopback port.

The registry answers 401 with the challenge a distribution registry sends (``realm``, ``service``, the
``scope`` the request needs, ``error="insufficient_scope"`` for a token that lacks it), so the client's
concurrency, scope merging and renewal are exercised over real sockets. The realm can be slowed down
(``delay``) so concurrent 401s really overlap the one token fetch.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lamina.client.scopes import ScopeSet

SERVICE = "auth-test"


@dataclass
class Realm:
    """``GET``/``POST /token``: a random opaque token per request, remembered with its scopes and expiry."""

    users: dict[str, str] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # identity token -> account
    expires_in: int = 300
    issued_at_offset: float | None = None  # seconds added to now for issued_at; None: field omitted
    delay: float = 0.05
    refuse: set[str] = field(default_factory=set)  # a request naming one of these repositories gets 403
    requests: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, tuple[ScopeSet, float]] = field(default_factory=dict)  # token -> (scopes, expires)
    host: str = ""

    def _issue(self, scopes: list[str]) -> web.Response:
        token = secrets.token_hex(16)
        self.tokens[token] = (ScopeSet.parse(scopes), time.time() + self.expires_in)
        doc: dict[str, Any] = {"token": token, "expires_in": self.expires_in}
        if self.issued_at_offset is not None:
            issued = time.time() + self.issued_at_offset
            fraction = f".{int(issued % 1 * 1e9):09d}Z"  # nanoseconds, as Docker Hub's realm writes them
            doc["issued_at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(issued)) + fraction
        return web.json_response(doc)

    def app(self) -> web.Application:
        async def get_token(request: web.Request) -> web.Response:
            scopes = request.query.getall("scope", [])
            self.requests.append({"method": "GET", "scopes": scopes, "account": request.query.get("account")})
            await asyncio.sleep(self.delay)
            header = request.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(user) != password:
                    return web.json_response({"details": "bad credentials"}, status=401)
            if any(name in self.refuse for _, name, _ in ScopeSet.parse(scopes).items):
                return web.json_response({"details": "requested access to the resource is denied"}, status=403)
            return self._issue(scopes)

        async def post_token(request: web.Request) -> web.Response:
            form = await request.post()
            scopes = str(form.get("scope", "")).split()
            self.requests.append({"method": "POST", "scopes": scopes, "grant_type": form.get("grant_type")})
            await asyncio.sleep(self.delay)
            if form.get("grant_type") != "refresh_token" or str(form.get("refresh_token")) not in self.refresh_tokens:
                return web.json_response({"error": "invalid_grant"}, status=401)
            return self._issue(scopes)

        app = web.Application()
        app.router.add_get("/token", get_token)
        app.router.add_post("/token", post_token)
        return app


@dataclass
class Front:
    """``HEAD /v2/<repo>/blobs/<digest>`` -> 200 for a valid credential holding ``pull`` on repo (and on
    every repository in ``also_needed``), else 401 with a challenge. ``basic`` switches to htpasswd-style auth."""

    realm: Realm
    basic: dict[str, str] | None = None
    also_needed: list[str] = field(default_factory=list)  # extra scopes every request needs
    revoked: set[str] = field(default_factory=set)
    reject_all: bool = False
    seen: list[str] = field(default_factory=list)  # the Authorization kind each request arrived with

    def _challenge(self, need: ScopeSet, error: str | None) -> dict[str, str]:
        if self.basic is not None:
            return {"WWW-Authenticate": 'Basic realm="auth-test"'}
        value = f'Bearer realm="http://{self.realm.host}/token",service="{SERVICE}",scope="{need}"'
        return {"WWW-Authenticate": value + (f',error="{error}"' if error else "")}

    def app(self) -> web.Application:
        async def head_blob(request: web.Request) -> web.Response:
            repo = request.match_info["repo"]
            need = ScopeSet.parse([f"repository:{repo}:pull", *self.also_needed])
            header = request.headers.get("Authorization", "")
            self.seen.append(header.split(" ", 1)[0] or "none")
            error = None
            if self.basic is not None and header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.basic.get(user) == password and not self.reject_all:
                    return web.Response(status=200, headers={"Content-Length": "3"})
            elif header.startswith("Bearer ") and self.basic is None:
                token = header[7:]
                granted = self.realm.tokens.get(token)
                if granted is not None and not self.reject_all and token not in self.revoked \
                        and granted[1] > time.time():
                    if granted[0].covers(need):
                        return web.Response(status=200, headers={"Content-Length": "3"})
                    error = "insufficient_scope"
            body = '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            return web.Response(status=401, text=body, content_type="application/json",
                                headers=self._challenge(need, error))

        async def ping(request: web.Request) -> web.Response:
            return web.Response(status=200)

        app = web.Application()
        app.router.add_route("HEAD", r"/v2/{repo:.+}/blobs/{digest}", head_blob)
        app.router.add_get("/v2/", ping)
        return app

"""One middleware that authenticates every ``/v2/`` request and checks the action the route needs,
plus the token endpoint (``GET``/``POST /token``) of the Docker token flow.

Actions per endpoint (distribution's token scopes): ``GET``/``HEAD`` under a repository need ``pull``;
``PUT``/``POST``/``PATCH`` and every upload request (status and cancel too) need ``push``; deleting a
manifest, tag or blob needs ``delete``; ``/v2/`` needs any valid credentials; ``/v2/_catalog`` needs
``registry:catalog:*`` and lists only the repositories the caller may pull. A cross-repository mount
also needs ``pull`` on the source: without it the mount is ignored and the client gets an ordinary
upload session, as distribution does; an automatic mount (no ``from``) is never tried with auth on.
Anonymous or wrong credentials get 401 with a Bearer challenge naming the scope; a Basic user
without the action gets 403 DENIED.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import MultiDict
from yarl import URL

from ..errors import ErrorCode, RegistryError
from .service import AUTH, AuthFailure, AuthService, Identity, parse_scopes

__all__ = ["IDENTITY", "auth_middleware", "identify_request", "token_endpoint"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IDENTITY = web.RequestKey("identity", Identity)  # the Identity of an authenticated request


def _needed(request: web.Request) -> str | None:
    """The action a repository route needs, or None for a route outside any repository."""
    if request.match_info.get("name") is None:
        return None
    method = request.method
    if "/blobs/uploads/" in request.path:
        return "push"  # every step of an upload, its status and its cancellation included
    if method in ("GET", "HEAD"):
        return "pull"
    if method == "DELETE":
        return "delete"
    return "push"


async def identify_request(service: AuthService, request: web.Request) -> Identity:
    """The caller's Identity; AuthFailure for wrong credentials. bcrypt runs in a thread."""
    header = request.headers.get("Authorization")
    if header and header.split(" ", 1)[0].lower() == "basic":
        return await asyncio.to_thread(service.identify, header)
    return service.identify(header)


def _unauthorized(service: AuthService, request: web.Request, scope: str | None, message: str,
                  error: str | None = None) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAUTHORIZED, message, status=401,
        headers={"WWW-Authenticate": service.challenge(request, scope, error)},
    )


def _without_mount(request: web.Request) -> web.Request:
    query = MultiDict((k, v) for k, v in request.query.items() if k not in ("mount", "from"))
    return request.clone(rel_url=URL(request.path).with_query(query))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = request.app.get(AUTH)
    if service is None or not request.path.startswith("/v2"):
        return await handler(request)
    name = request.match_info.get("name")
    action = _needed(request)
    scope = f"repository:{name}:{'pull,push' if action == 'push' else action}" if action else None
    if request.path == "/v2/_catalog":
        scope = "registry:catalog:*"
    try:
        identity = await identify_request(service, request)
    except AuthFailure as exc:
        raise _unauthorized(service, request, scope, str(exc)) from None
    request[IDENTITY] = identity
    if name is None or action is None:
        if request.path == "/v2/_catalog":
            if service.may_list_catalog(identity):
                return _visible_catalog(service, identity, await handler(request))
            if identity.user is not None and identity.method == "basic":
                raise RegistryError(ErrorCode.DENIED, "listing the catalog is not allowed for this user")
            raise _unauthorized(service, request, scope, "authentication required to list the catalog")
        if identity.user is None and identity.method == "anonymous":
            raise _unauthorized(service, request, None, "authentication required")
        return await handler(request)
    allowed = service.actions(identity, name)
    if action not in allowed:
        who = identity.user or "anonymous"
        message = f"access denied: {who} may not {action} repository {name}"
        if identity.method == "anonymous":
            raise _unauthorized(service, request, scope, f"authentication required to {action} repository {name}")
        if identity.method == "bearer" and (
            service.issuer is None or action in service.rule_actions(identity.user, name)
        ):
            raise _unauthorized(service, request, scope, f"the token does not grant {action} on {name}",
                                "insufficient_scope")
        raise RegistryError(ErrorCode.DENIED, message, detail={"name": name, "action": action})
    source = request.query.get("from")
    # A mount needs pull on its source. An automatic mount (no ``from``) could link the blob from any
    # repository, including ones this caller may not read, so with auth on it is never attempted.
    if request.method == "POST" and "mount" in request.query and (
        not source or "pull" not in service.actions(identity, source)
    ):
        request = _without_mount(request)
        request[IDENTITY] = identity
    return await handler(request)


def _visible_catalog(service: AuthService, identity: Identity, response: web.StreamResponse) -> web.StreamResponse:
    """The catalog page without the names this caller may not pull (a page may then hold fewer than n)."""
    if not isinstance(response, web.Response) or response.status != 200 or response.body is None:
        return response
    doc = json.loads(bytes(response.body))  # type: ignore[arg-type]
    doc["repositories"] = [name for name in doc.get("repositories", []) if "pull" in service.actions(identity, name)]
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("link",)}
    return web.json_response(doc, headers=headers)


def _token_error(status: int, message: str, challenge: str | None = None) -> web.Response:
    body = json.dumps({"errors": [{"code": "UNAUTHORIZED" if status == 401 else "DENIED", "message": message}]})
    headers = {"WWW-Authenticate": challenge} if challenge else {}
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


async def token_endpoint(request: web.Request) -> web.Response:
    """Docker token endpoint: HTTP Basic (or anonymous, or an OAuth2 password grant) in, signed JWT out."""
    service = request.app[AUTH]
    if service.issuer is None:
        raise web.HTTPNotFound()
    scopes = request.query.getall("scope", [])
    user: str | None = None
    try:
        if request.method == "POST":
            form = await request.post()
            scopes = scopes + [str(v) for v in form.getall("scope", [])]
            if form.get("grant_type") != "password":
                return _token_error(400, "unsupported grant_type: only password is supported")
            import base64

            raw = f"{form.get('username', '')}:{form.get('password', '')}".encode()
            user = await asyncio.to_thread(service.basic_user, "Basic " + base64.b64encode(raw).decode())
        else:
            identity = await identify_request(service, request)
            if identity.method == "bearer":
                return _token_error(400, "present Basic credentials (or none) to the token endpoint")
            user = identity.user
    except AuthFailure as exc:
        return _token_error(401, str(exc), 'Basic realm="lamina"')
    wanted = request.query.get("service")
    if wanted and wanted != service.config.token.service:
        return _token_error(400, f"unknown service {wanted!r}; this registry is {service.config.token.service!r}")
    token, lifetime = service.issuer.issue(user or "", service.grant_for(user, parse_scopes(scopes)))
    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return web.json_response(
        {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": issued}
    )

"""One middleware that authenticates every ``/v2/`` request and checks the action the route needs,
plus the token endpoint (``GET``/``POST /token``) of the Docker token flow.

Actions per endpoint (distribution's token scopes): ``GET``/``HEAD`` under a repository need ``pull``;
``PUT``/``POST``/``PATCH`` and every upload request (status and cancel too) need ``push``; deleting a
manifest, tag or blob needs ``delete``; ``/v2/`` needs any valid credentials; ``/v2/_catalog`` needs
``registry:catalog:*`` and lists only the repositories the caller may pull: the middleware puts a
:class:`Visibility` on the request and the catalog handler filters with it before paging. A
cross-repository mount also needs ``pull`` on the source: without it the mount is ignored and the
client gets an ordinary upload session, as distribution does; an automatic mount (no ``from``) is
never tried with auth on. Anonymous or wrong credentials get 401 with a Bearer challenge naming the
scope; a Basic user without the action gets 403 DENIED; a user and address locked out after failed
logins get 429 TOOMANYREQUESTS with ``Retry-After``. Every such refusal writes one audit line
(:mod:`.audit`). Errors are raised as :class:`RegistryError`, rendered by the app's one error middleware.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiDict
from yarl import URL

from ..errors import ErrorCode, RegistryError
from .audit import audit_denied
from .service import AUTH, AuthFailure, AuthService, Identity, TooManyFailures, parse_scopes

__all__ = ["IDENTITY", "VISIBILITY", "Visibility", "auth_middleware", "identify_request", "token_endpoint"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IDENTITY = web.RequestKey("identity", Identity)  # the Identity of an authenticated request


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which repositories a listing may name to this caller (those it may pull)."""

    service: AuthService
    identity: Identity

    def __call__(self, repository: str) -> bool:
        return self.service.may_see(self.identity, repository)


VISIBILITY = web.RequestKey("visibility", Visibility)  # set on catalog requests when auth is on


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
    address = request.remote or ""
    if header and header.split(" ", 1)[0].lower() == "basic":
        return await asyncio.to_thread(service.identify, header, address)
    return service.identify(header, address)


def _unauthorized(service: AuthService, request: web.Request, scope: str | None, message: str,
                  error: str | None = None) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAUTHORIZED, message, status=401,
        headers={"WWW-Authenticate": service.challenge(request, scope, error)},
    )


def _too_many(exc: TooManyFailures) -> RegistryError:
    return RegistryError(
        ErrorCode.TOOMANYREQUESTS, str(exc), detail={"retry_after": exc.retry_after},
        headers={"Retry-After": str(exc.retry_after)},
    )


def _denied(request: web.Request, error: RegistryError, user: str | None, repository: str | None = None,
            action: str | None = None) -> RegistryError:
    """``error``, after its audit line."""
    audit_denied(request, error.status, error.message, user=user, repository=repository, action=action)
    return error


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
    audited = action
    if request.path == "/v2/_catalog":
        scope, audited = "registry:catalog:*", "catalog"
    try:
        identity = await identify_request(service, request)
    except TooManyFailures as exc:
        raise _denied(request, _too_many(exc), exc.user, name, audited) from None
    except AuthFailure as exc:
        raise _denied(request, _unauthorized(service, request, scope, str(exc)), exc.user, name, audited) from None
    request[IDENTITY] = identity
    who = identity.user
    if name is None or action is None:
        if request.path == "/v2/_catalog":
            if service.may_list_catalog(identity):
                request[VISIBILITY] = Visibility(service, identity)
                return await handler(request)
            if identity.user is not None and identity.method == "basic":
                error = RegistryError(ErrorCode.DENIED, "listing the catalog is not allowed for this user")
                raise _denied(request, error, who, action="catalog")
            error = _unauthorized(service, request, scope, "authentication required to list the catalog")
            raise _denied(request, error, who, action="catalog")
        if identity.user is None and identity.method == "anonymous":
            raise _denied(request, _unauthorized(service, request, None, "authentication required"), None)
        return await handler(request)
    allowed = service.actions(identity, name)
    if action not in allowed:
        message = f"access denied: {who or 'anonymous'} may not {action} repository {name}"
        if identity.method == "anonymous":
            error = _unauthorized(service, request, scope, f"authentication required to {action} repository {name}")
        elif identity.method == "bearer" and (
            service.issuer is None or action in service.rule_actions(identity.user, name)
        ):
            error = _unauthorized(service, request, scope, f"the token does not grant {action} on {name}",
                                  "insufficient_scope")
        else:
            error = RegistryError(ErrorCode.DENIED, message, detail={"name": name, "action": action})
        raise _denied(request, error, who, name, action)
    source = request.query.get("from")
    # A mount needs pull on its source. An automatic mount (no ``from``) could link the blob from any
    # repository, including ones this caller may not read, so with auth on it is never attempted.
    if request.method == "POST" and "mount" in request.query and (
        not source or "pull" not in service.actions(identity, source)
    ):
        request = _without_mount(request)
        request[IDENTITY] = identity
    return await handler(request)


def _bad_token_request(message: str) -> RegistryError:
    return RegistryError(ErrorCode.UNSUPPORTED, message, status=400)


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
                raise _bad_token_request("unsupported grant_type: only password is supported")
            raw = f"{form.get('username', '')}:{form.get('password', '')}".encode()
            header = "Basic " + base64.b64encode(raw).decode()
            user = await asyncio.to_thread(service.basic_user, header, request.remote or "")
        else:
            identity = await identify_request(service, request)
            if identity.method == "bearer":
                raise _bad_token_request("present Basic credentials (or none) to the token endpoint")
            user = identity.user
    except TooManyFailures as exc:
        raise _denied(request, _too_many(exc), exc.user, action="token") from None
    except AuthFailure as exc:
        error = RegistryError(ErrorCode.UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": 'Basic realm="lamina"'})
        raise _denied(request, error, exc.user, action="token") from None
    wanted = request.query.get("service")
    if wanted and wanted != service.config.token.service:
        raise _bad_token_request(f"unknown service {wanted!r}; this registry is {service.config.token.service!r}")
    token, lifetime = service.issuer.issue(user or "", service.grant_for(user, parse_scopes(scopes)))
    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return web.json_response(
        {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": issued}
    )

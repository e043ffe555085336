"""The registry's aiohttp application: one route table that reads like the spec's endpoint list.

distribution-spec v1.1 spec.md "Endpoints" (end-1 .. end-13). Repository names contain slashes, so
the ``{name}`` segment matches greedily up to the last ``/blobs/``, ``/manifests/``, ``/tags/`` or
``/referrers/``; the middleware then checks it against the spec's name grammar (NAME_INVALID).
Shared services live on typed ``web.AppKey``s (see :mod:`lamina.registry.services`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from lamina.oci import is_valid_name
from lamina.store import BlobUnknown, UploadUnknown, open_storage

from .config import RegistryConfig
from .errors import ErrorCode, RegistryError, error_response
from .httpserver import handler_args
from .janitor import expire_uploads_forever
from .pacing import close_refused_bodies
from .routes import base, blobs, catalog, manifests, referrers, tags, uploads
from .services import CONFIG, OFFLOAD, STORAGE, Offloader
from .verify import VERIFIER, BlobVerifier

__all__ = ["create_app"]

log = logging.getLogger("lamina.registry")

_NAME = "{name:.+}"
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _routes() -> list[web.RouteDef]:
    """The spec's endpoint table, in its order (uploads before blobs: the longer path wins)."""
    n = _NAME
    return [
        web.get("/v2/", base.version_check, allow_head=True),  # end-1
        web.get("/v2", base.version_check, allow_head=True),
        web.get("/v2/_catalog", catalog.list_repositories, allow_head=False),
        web.post(f"/v2/{n}/blobs/uploads/", uploads.start),  # end-4a/4b/11
        web.post(f"/v2/{n}/blobs/uploads", uploads.start),
        web.patch(f"/v2/{n}/blobs/uploads/{{session}}", uploads.patch),  # end-5
        web.put(f"/v2/{n}/blobs/uploads/{{session}}", uploads.finish),  # end-6
        web.get(f"/v2/{n}/blobs/uploads/{{session}}", uploads.status, allow_head=False),  # end-13
        web.delete(f"/v2/{n}/blobs/uploads/{{session}}", uploads.cancel),
        web.head(f"/v2/{n}/blobs/{{digest}}", blobs.head),  # end-2
        web.get(f"/v2/{n}/blobs/{{digest}}", blobs.get, allow_head=False),  # end-2
        web.delete(f"/v2/{n}/blobs/{{digest}}", blobs.delete),  # end-10
        web.head(f"/v2/{n}/manifests/{{reference}}", manifests.get),  # end-3
        web.get(f"/v2/{n}/manifests/{{reference}}", manifests.get, allow_head=False),  # end-3
        web.put(f"/v2/{n}/manifests/{{reference}}", manifests.put),  # end-7
        web.delete(f"/v2/{n}/manifests/{{reference}}", manifests.delete),  # end-9
        web.get(f"/v2/{n}/tags/list", tags.list_tags, allow_head=False),  # end-8a/8b
        web.get(f"/v2/{n}/referrers/{{digest}}", referrers.list_referrers, allow_head=False),  # end-12a/12b
    ]


@web.middleware
async def spec_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the repository name, and render every error in the spec's JSON format."""
    head = request.method == "HEAD"
    try:
        name = request.match_info.get("name")
        if name is not None and not is_valid_name(name):
            raise RegistryError(ErrorCode.NAME_INVALID, f"invalid repository name {name!r}", detail={"name": name})
        return await handler(request)
    except RegistryError as exc:
        return error_response(exc, head=head)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        error = RegistryError(
            ErrorCode.UNSUPPORTED, f"{request.method} is not supported on {request.path}", status=405,
            headers={"Allow": allow},
        )
        return error_response(error, head=head)
    except web.HTTPNotFound:
        error = RegistryError(ErrorCode.NAME_UNKNOWN, f"no such endpoint: {request.path}", status=404)
        return error_response(error, head=head)
    except BlobUnknown as exc:  # the bytes went away between the check and the read (delete, GC)
        return error_response(RegistryError(ErrorCode.BLOB_UNKNOWN, str(exc)), head=head)
    except UploadUnknown as exc:
        return error_response(RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, str(exc)), head=head)
    except (web.HTTPException, ConnectionResetError):  # aiohttp's own answers; a client that went away
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path_qs)
        return error_response(RegistryError(ErrorCode.UNKNOWN, "internal server error"), head=head)


async def _api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION[0]] = API_VERSION[1]


def create_app(config: RegistryConfig) -> web.Application:
    """The application; storage is opened on startup (after any fork) and closed on cleanup."""
    app = web.Application(
        middlewares=[spec_errors], client_max_size=config.max_manifest_bytes + 1,
        # idle connections (none or an unfinished request head yet) close after limits.idle_timeout_seconds
        handler_args={**handler_args(config.max_header_bytes), "keepalive_timeout": config.limits.idle_timeout_seconds},
    )
    app[CONFIG] = config
    app[VERIFIER] = BlobVerifier(config.verify_on_read)  # verification on read (lamina.registry.verify)

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        storage = open_storage(config.root, synchronous=config.sqlite_synchronous, blobs=config.blobs,
                               metadata=config.metadata)
        offload = Offloader()
        app[STORAGE] = storage
        app[OFFLOAD] = offload
        stop = asyncio.Event()
        janitor = None
        if config.run_janitor:
            janitor = asyncio.create_task(
                expire_uploads_forever(storage, config.upload_expiry_seconds, offload, stop)
            )
        try:
            yield
        finally:
            stop.set()
            if janitor is not None:
                await janitor
            await offload.drain()  # no storage call may still run when the database closes
            storage.close()

    app.cleanup_ctx.append(storage_ctx)
    app.on_response_prepare.append(_api_version_header)
    app.on_response_prepare.append(close_refused_bodies)  # 408/413: Connection: close (lamina.registry.pacing)
    app.router.add_routes(_routes())
    from .ops import install  # auth, metrics, console, background gc/lifecycle (issue 5)

    install(app, config, config.ops)
    return app

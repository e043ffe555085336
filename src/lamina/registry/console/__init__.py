"""The read-only web console at ``/ui/``: repositories, a repository's manifests, a manifest's detail.

Server-rendered HTML (:mod:`.pages`), behind the same auth as the API: with ``[auth]`` configured the
browser is asked for Basic credentials and sees only repositories the user may pull. Listings come
from the metadata store's Inventory role in a thread; a manifest's platforms and a build cache's record count
are read from stored content (config blobs are small and read with a size cap).
"""

from __future__ import annotations

import json

from aiohttp import web

from lamina.oci import CacheConfig, FormatError, ImageIndex, ImageManifest, parse_digest, parse_manifest
from lamina.oci import mediatypes as mt
from lamina.store import Storage
from lamina.store.views import ManifestInfo

from ..auth import AUTH
from ..auth.audit import audit_denied
from ..auth.middleware import identify_request
from ..auth.service import AuthFailure, Identity, TooManyFailures
from ..services import OFFLOAD, STORAGE
from . import pages

__all__ = ["add_console_routes"]

_CONFIG_CAP = 1 << 20


def add_console_routes(app: web.Application) -> None:
    app.router.add_get("/ui", _redirect)
    app.router.add_get("/ui/", repositories)
    app.router.add_get("/ui/r/{name:.+}/m/{digest}", manifest_detail)
    app.router.add_get("/ui/r/{name:.+}", repository)


async def _redirect(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=headers)


async def _viewer(request: web.Request) -> Identity | web.Response:
    """Who is looking; a 401 page with a Basic challenge when auth is on and nobody signed in."""
    service = request.app.get(AUTH)
    if service is None:
        return Identity(None, "anonymous")
    challenge = {"WWW-Authenticate": 'Basic realm="lamina registry console", charset="UTF-8"'}
    try:
        identity = await identify_request(service, request)
    except TooManyFailures as exc:
        audit_denied(request, 429, str(exc), user=exc.user, action="console")
        return _html(pages.error_page(429, str(exc), None), 429, {"Retry-After": str(exc.retry_after)})
    except AuthFailure as exc:
        audit_denied(request, 401, str(exc), user=exc.user, action="console")
        return _html(pages.error_page(401, str(exc), None), 401, challenge)
    if identity.user is None:
        audit_denied(request, 401, "sign in to see the registry", user=None, action="console")
        return _html(pages.error_page(401, "sign in to see the registry", None), 401, challenge)
    return identity


def _may_pull(request: web.Request, identity: Identity, name: str) -> bool:
    service = request.app.get(AUTH)
    return service is None or "pull" in service.actions(identity, name)


async def repositories(request: web.Request) -> web.Response:
    identity = await _viewer(request)
    if isinstance(identity, web.Response):
        return identity
    repos = await request.app[OFFLOAD].run(request.app[STORAGE].metadata.repository_infos)
    visible = [r for r in repos if _may_pull(request, identity, r.name)]
    return _html(pages.repositories_page(visible, identity.user))


def _read_small_blob(storage: Storage, digest: str) -> bytes | None:
    try:
        parsed = parse_digest(digest)
    except ValueError:
        return None
    data = storage.blobs.read_small(parsed, _CONFIG_CAP)  # a local file or an S3 object
    return data if data is not None and parsed.verify(data) else None


def _cache_counts(storage: Storage, digest: str) -> tuple[int, int] | None:
    """(records, layers) of the cacheconfig blob ``digest``; None when it is missing, too big or not one."""
    data = _read_small_blob(storage, digest)
    if data is None:
        return None
    try:
        cache = CacheConfig.parse(data)
    except FormatError:
        return None
    return len(cache.records), len(cache.layers)


def _platform_of(storage: Storage, info: ManifestInfo, content: bytes | None) -> str:
    if content is None:
        return ""
    try:
        manifest = parse_manifest(content, info.media_type)
    except FormatError:
        return ""
    if isinstance(manifest, ImageIndex):
        names = sorted({_platform_text(d.platform) for d in manifest.manifests if d.platform is not None})
        return ", ".join(n for n in names if n)
    if manifest.config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        data = _read_small_blob(storage, str(manifest.config.digest))
        if data is not None:
            try:
                doc = json.loads(data)
                parts = [doc.get("os"), doc.get("architecture"), doc.get("variant")]
                return "/".join(p for p in parts if isinstance(p, str) and p)
            except (ValueError, RecursionError):  # a pushed config blob is anyone's JSON, nested at will
                return ""
    return ""


def _platform_text(platform: object) -> str:
    parts = [getattr(platform, "os", None), getattr(platform, "architecture", None), getattr(platform, "variant", None)]
    return "/".join(p for p in parts if p)


async def repository(request: web.Request) -> web.Response:
    identity = await _viewer(request)
    if isinstance(identity, web.Response):
        return identity
    name = request.match_info["name"]
    storage = request.app[STORAGE]
    if not _may_pull(request, identity, name) or not storage.metadata.repository_exists(name):
        return _html(pages.error_page(404, f"no repository {name}", identity.user), 404)

    def load() -> tuple[list[ManifestInfo], dict[str, str]]:
        infos = storage.metadata.manifest_infos(name)
        platforms = {}
        for info in infos:
            record = storage.metadata.get_manifest(name, info.digest)
            platforms[info.digest] = _platform_of(storage, info, record.content if record else None)
        return infos, platforms

    infos, platforms = await request.app[OFFLOAD].run(load)
    return _html(pages.repository_page(name, infos, platforms, identity.user))


def _detail(storage: Storage, name: str, digest: str) -> pages.Detail | None:
    record = storage.metadata.get_manifest(name, digest)
    if record is None:
        return None
    info = next((i for i in storage.metadata.manifest_infos(name) if i.digest == str(record.digest)), None)
    if info is None:
        return None
    manifest = parse_manifest(record.content, record.media_type)
    referrers = [
        (r.artifact_type or "", str(r.digest), r.size) for r in storage.metadata.referrers(name, record.digest, None)
    ]
    if isinstance(manifest, ImageManifest):
        config = (manifest.config.media_type, str(manifest.config.digest), manifest.config.size)
        layers = [(d.media_type, str(d.digest), d.size) for d in manifest.layers]
        records = cache_layers = None
        counts = _cache_counts(storage, str(manifest.config.digest)) if info.kind == "cache" else None
        if counts is not None:
            records, cache_layers = counts
        return pages.Detail(info, config, layers, (), referrers, records, cache_layers)
    children = [(d.media_type, str(d.digest), d.size, _platform_text(d.platform) if d.platform else "")
                for d in manifest.manifests]
    records = cache_layers = None
    if info.kind == "cache":  # BuildKit's legacy cache index: the cacheconfig is one of its "manifests"
        for d in manifest.manifests:
            if d.media_type == mt.BUILDKIT_CACHE_CONFIG:
                counts = _cache_counts(storage, str(d.digest))
                if counts is not None:
                    records, cache_layers = counts
    return pages.Detail(info, None, (), children, referrers, records, cache_layers)


async def manifest_detail(request: web.Request) -> web.Response:
    identity = await _viewer(request)
    if isinstance(identity, web.Response):
        return identity
    name, digest = request.match_info["name"], request.match_info["digest"]
    if not _may_pull(request, identity, name):
        return _html(pages.error_page(404, f"no repository {name}", identity.user), 404)
    try:
        parse_digest(digest)
    except ValueError:
        return _html(pages.error_page(404, f"invalid digest {digest}", identity.user), 404)
    detail = await request.app[OFFLOAD].run(_detail, request.app[STORAGE], name, digest)
    if detail is None:
        return _html(pages.error_page(404, f"no manifest {digest} in {name}", identity.user), 404)
    return _html(pages.detail_page(name, detail, identity.user))

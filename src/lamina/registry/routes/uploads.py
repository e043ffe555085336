"""end-4a/4b/5/6/11/13: blob upload sessions, monolithic and chunked, and cross-repository mounts.

Bytes stream from the socket into the upload store (hashed as they stream by the store, never held
whole in memory; a body longer or shorter than its headers declare fails inside the stream, so none of it
is kept). Session state lives in the metadata store and partial data on disk, so an upload survives
a restart. Limits (:mod:`lamina.registry.limits`): a blob over ``max_blob_bytes`` is refused with 413
``SIZE_INVALID`` as soon as a header declares it or the bytes received pass it, before anything more is
stored; a new session past the per-repository or per-user count is 429 ``TOOMANYREQUESTS`` with
``Retry-After``; a body that stalls is 408 (:mod:`lamina.registry.pacing`). ``Range`` follows CNCF
distribution (``0-<size-1>``, and ``0-0`` for an empty session),
which is what every client is tested against.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from lamina.oci import Digest, is_valid_name
from lamina.store import (
    BlobUnknown,
    Storage,
    UploadConflict,
    UploadLimitReached,
    UploadLimits,
    UploadSession,
    UploadUnknown,
)

from ..auth.middleware import IDENTITY
from ..errors import ErrorCode, RegistryError
from ..pacing import paced_chunks
from ._common import config, digest_param, offload, storage

__all__ = ["cancel", "finish", "patch", "start", "status"]

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONTENT_RANGE = re.compile(r"^(?:bytes )?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def _location(name: str, session_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{session_id}"


def _range(size: int) -> str:
    return f"0-{max(size - 1, 0)}"


def _session_headers(name: str, session: str, size: int) -> dict[str, str]:
    return {
        "Location": _location(name, session),
        "Range": _range(size),
        "Docker-Upload-UUID": session,
        "Content-Length": "0",
    }


def _created(name: str, digest: Digest) -> web.Response:
    headers = {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest), "Content-Length": "0"}
    return web.Response(status=201, headers=headers)


def _gone(session_id: str, exc: Exception) -> RegistryError:
    return RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, str(exc), detail={"session": session_id})


def _too_large(name: str, size: int, maximum: int, how: str) -> RegistryError:
    return RegistryError(
        ErrorCode.SIZE_INVALID,
        f"blob upload to {name} {how} {size} bytes, over the registry's maximum blob size of {maximum} bytes "
        "(limits.max_blob_bytes)",
        detail={"size": size, "max_blob_bytes": maximum},
        status=413,
    )


async def _body(request: web.Request, declared: int | None, what: str, offset: int) -> AsyncIterator[bytes]:
    """The body as it arrives; with ``declared``, a size error raised *inside* the stream, so the store's
    all-or-nothing append keeps none of a body longer (checked before the extra bytes are stored) or shorter
    than ``what`` (the Content-Length or Content-Range header) says. The same for a blob that grows past
    ``max_blob_bytes`` (``offset`` bytes are already in the session) and for a client too slow to wait for."""
    limits = config(request).limits
    received = 0
    async for chunk in paced_chunks(request.content, limits):
        received += len(chunk)
        if declared is not None and received > declared:
            raise RegistryError(ErrorCode.SIZE_INVALID, f"the body is longer than the {declared} bytes {what} declares")
        if offset + received > limits.max_blob_bytes:
            raise _too_large(request.match_info["name"], offset + received, limits.max_blob_bytes, "reached")
        yield chunk
    if declared is not None and received != declared:
        raise RegistryError(ErrorCode.SIZE_INVALID, f"received {received} bytes, {what} declares {declared}")


async def _new_session(request: web.Request, name: str) -> str:
    """A new session, counted against the repository's and the caller's open sessions (429 past either)."""
    settings = config(request)
    identity = request.get(IDENTITY)
    user = identity.user if identity is not None else None
    now = time.time()
    limits = UploadLimits(
        settings.limits.upload_sessions_per_repository,
        settings.limits.upload_sessions_per_user,
        now - settings.upload_expiry_seconds,
    )
    session = UploadSession(uuid.uuid4().hex, name, 0, now, now, user)
    try:
        await offload(request).run(_new_session_sync, storage(request), session, limits)
    except UploadLimitReached as exc:
        retry = exc.oldest_update + settings.upload_expiry_seconds - time.time()
        setting = f"upload_sessions_per_{exc.scope}"
        raise RegistryError(
            ErrorCode.TOOMANYREQUESTS,
            f"{exc} (limits.{setting}): finish or cancel some, or retry later; abandoned sessions stop "
            f"counting after upload_expiry_seconds ({settings.upload_expiry_seconds:g} s)",
            detail={exc.scope: exc.owner, "limit": exc.limit},
            headers={"Retry-After": str(min(max(math.ceil(retry), 1), 60))},
        ) from None
    return session.id


def _new_session_sync(store: Storage, session: UploadSession, limits: UploadLimits) -> None:
    store.uploads.create(session.id)
    try:
        store.metadata.create_upload(session, limits)
    except BaseException:
        store.uploads.discard(session.id)
        raise


def _session(request: web.Request) -> tuple[str, UploadSession]:
    name = request.match_info["name"]
    session_id = request.match_info["session"]
    session = storage(request).metadata.get_upload(session_id) if _SESSION_ID.match(session_id) else None
    if session is None or session.repository != name:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, f"upload session {session_id!r} is not known in {name}",
                            detail={"session": session_id})
    return name, session


async def _try_mount(request: web.Request, name: str, digest: Digest, source: str | None) -> bool:
    """Link ``digest`` into ``name`` when ``source`` (or, without it and with ``automatic_crossmount`` on,
    any repository) has it."""
    store = storage(request)
    if source is not None:
        size = store.metadata.linked_blob_size(source, digest)
    elif not config(request).automatic_crossmount:
        return False
    else:
        holders = store.metadata.repositories_with_blob(digest, 1)
        size = store.metadata.linked_blob_size(holders[0], digest) if holders else None
    if size is None or await _blob_size(request, store, digest) is None:
        return False
    try:
        await offload(request).run(store.metadata.link_blob, name, digest, size, _present(store, digest))
    except BlobUnknown:  # garbage-collected since the check: upload it instead
        return False
    return True


async def start(request: web.Request) -> web.Response:
    """POST: a new session (202), a monolithic upload with ``?digest=`` (201), or a mount (201 or 202)."""
    name = request.match_info["name"]
    store = storage(request)
    mount = request.query.get("mount")
    if mount is not None:
        digest = digest_param(mount, "mount")
        source = request.query.get("from") or None
        if source is not None and not is_valid_name(source):
            raise RegistryError(ErrorCode.NAME_INVALID, f"invalid repository name in from: {source!r}",
                                detail={"from": source})
        if await _try_mount(request, name, digest, source):
            return _created(name, digest)
        session_id = await _new_session(request, name)
        return web.Response(status=202, headers=_session_headers(name, session_id, 0))
    if "digest" in request.query:
        digest = digest_param(request.query["digest"])
        _check_declared_size(request, name, 0, request.content_length)
        session_id = await _new_session(request, name)
        try:
            await _append(request, store, session_id, 0)
            await _commit(request, name, session_id, digest)
        except BaseException:
            await offload(request).run(_drop_session, store, session_id)
            raise
        return _created(name, digest)
    session_id = await _new_session(request, name)
    return web.Response(status=202, headers=_session_headers(name, session_id, 0))


async def _append(request: web.Request, store: Storage, session_id: str, offset: int) -> int:
    """Stream the request body at ``offset``; check Content-Range/Content-Length; return the new size."""
    content_range = request.headers.get("Content-Range")
    length = request.content_length
    declared, what = (length, f"Content-Length {length}") if length is not None else (None, "")
    if content_range is not None:
        match = _CONTENT_RANGE.match(content_range.strip())
        if match is None:
            raise RegistryError(ErrorCode.RANGE_INVALID, f"malformed Content-Range {content_range!r}",
                                headers={"Range": _range(offset)})
        first, last = int(match.group(1)), int(match.group(2))
        if first != offset or last < first:
            raise RegistryError(
                ErrorCode.RANGE_INVALID,
                f"chunk {first}-{last} does not continue the upload, which has {offset} bytes",
                headers={"Range": _range(offset)},
            )
        if length is not None and length != last - first + 1:
            raise RegistryError(ErrorCode.SIZE_INVALID,
                                f"Content-Length {length} does not match Content-Range {content_range}")
        declared, what = last - first + 1, f"Content-Range {content_range}"
    _check_declared_size(request, request.match_info["name"], offset, declared)
    try:
        size = await store.uploads.append(session_id, offset, _body(request, declared, what, offset))
    except UploadConflict as exc:
        raise RegistryError(ErrorCode.RANGE_INVALID, str(exc), headers={"Range": _range(exc.current_size)}) from None
    except UploadUnknown as exc:
        raise _gone(session_id, exc) from None
    return size


def _check_declared_size(request: web.Request, name: str, offset: int, declared: int | None) -> None:
    """413 before a byte of the body is read when its headers already take the blob past the maximum."""
    maximum = config(request).limits.max_blob_bytes
    if declared is not None and offset + declared > maximum:
        raise _too_large(name, offset + declared, maximum, "would reach")


async def _commit(request: web.Request, name: str, session_id: str, digest: Digest) -> None:
    store = storage(request)
    try:
        size = await store.uploads.commit(session_id, digest)
    except UploadUnknown as exc:
        raise _gone(session_id, exc) from None
    except ValueError as exc:
        raise RegistryError(ErrorCode.DIGEST_INVALID, str(exc), detail={"digest": str(digest)}) from None
    try:
        await offload(request).run(store.metadata.link_uploaded_blob, session_id, name, digest, size,
                                   _present(store, digest))
    except BlobUnknown:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f"blob {digest} was garbage-collected before it could be linked into {name}; upload it again",
        ) from None


async def _blob_size(request: web.Request, store: Storage, digest: Digest) -> int | None:
    """A stat for local blobs; a remote store (S3) is asked from a thread, off the event loop."""
    if store.blobs.remote:
        return await offload(request).run(store.blobs.size, digest)
    return store.blobs.size(digest)


def _present(store: Storage, digest: Digest) -> Callable[[], bool]:
    """For ``link_blob``: checked under the metadata write lock, the one GC sweeps files under."""
    return lambda: store.blobs.size(digest) is not None


def _drop_session(store: Storage, session_id: str) -> None:
    store.uploads.discard(session_id)
    store.metadata.delete_upload(session_id)


async def patch(request: web.Request) -> web.Response:
    name, session = _session(request)
    store = storage(request)
    size = await _append(request, store, session.id, await _current_size(request, store, session))
    await offload(request).run(store.metadata.update_upload, session.id, size, time.time())
    return web.Response(status=202, headers=_session_headers(name, session.id, size))


async def _current_size(request: web.Request, store: Storage, session: UploadSession) -> int:
    if store.blobs.remote:  # the session's state is an object in S3: read it off the event loop
        size = await offload(request).run(store.uploads.current_size, session.id)
    else:
        size = store.uploads.current_size(session.id)
    if size is None:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, f"upload session {session.id!r} has no data on disk",
                            detail={"session": session.id})
    return size


async def finish(request: web.Request) -> web.Response:
    """PUT ``?digest=``: append an optional last chunk, verify, move into place, link (201)."""
    name, session = _session(request)
    store = storage(request)
    digest = digest_param(request.query.get("digest"))
    offset = await _current_size(request, store, session)
    if request.content_length or request.headers.get("Content-Range") or request.body_exists:
        await _append(request, store, session.id, offset)
    await _commit(request, name, session.id, digest)
    return _created(name, digest)


async def status(request: web.Request) -> web.Response:
    name, session = _session(request)
    size = await _current_size(request, storage(request), session)
    return web.Response(status=204, headers=_session_headers(name, session.id, size))


async def cancel(request: web.Request) -> web.Response:
    _, session = _session(request)
    await offload(request).run(_drop_session, storage(request), session.id)
    return web.Response(status=204, headers={"Content-Length": "0"})

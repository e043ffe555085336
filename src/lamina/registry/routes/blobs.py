"""end-2 / end-10: ``HEAD``/``GET``/``DELETE /v2/<name>/blobs/<digest>``.

A blob is visible in a repository only when it is linked there (pushed or mounted into it). GET is
zero-copy: ``web.FileResponse`` (with :mod:`.zerocopy` under uvloop) uses sendfile(2) and answers
``Range`` with 206 (or 416) itself. With S3 blobs (``blobs = "s3://..."``) HEAD answers from metadata and
GET is a 307 to a presigned URL of the object (``redirect=false``: streamed from S3, ``Range`` honoured,
a whole blob hashed on the way, :mod:`lamina.store.s3blobs`; verification on read as
:mod:`lamina.registry.verify` says for S3).
DELETE unlinks the blob from the repository; the bytes are reclaimed by garbage collection. A blob that
a manifest of the repository names (its config or a layer, directly or as a child of an index) is
refused with 405 UNSUPPORTED, checked in the unlink's own write transaction: deleting it would leave the
manifest answering 200 and its blob 404. 405 is the status the OCI conformance suite accepts for a blob
delete a registry does not allow; delete the manifests first, then the blob.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web

from lamina.oci import Digest
from lamina.store import BlobReferenced

from ..errors import ErrorCode, RegistryError
from ..verify import VERIFIER
from ._common import digest_param, offload, storage
from .zerocopy import BlobFileResponse

__all__ = ["delete", "get", "head"]

log = logging.getLogger("lamina.registry")

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _linked_size(request: web.Request) -> tuple[str, Digest, int]:
    name = request.match_info["name"]
    digest = digest_param(request.match_info["digest"])
    store = storage(request)
    size = store.metadata.linked_blob_size(name, digest)
    # remote blobs (S3): answered from metadata alone, no request to the store (a link exists only after
    # the upload was verified and written; GC unlinks before it deletes)
    if size is None or (not store.blobs.remote and store.blobs.size(digest) is None):
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in repository {name}",
                            detail={"digest": str(digest)})
    return name, digest, size


def _headers(digest: Digest) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


async def head(request: web.Request) -> web.Response:
    _, digest, size = _linked_size(request)
    headers = _headers(digest)
    headers["Content-Length"] = str(size)
    return web.Response(status=200, headers=headers, content_type="application/octet-stream")


async def get(request: web.Request) -> web.StreamResponse:
    _, digest, size = _linked_size(request)
    store = storage(request)
    if store.blobs.remote:  # S3: a presigned redirect (the client checks the digest), or streamed and hashed
        url = store.blobs.redirect_url(digest)
        if url is not None:
            return web.Response(status=307, headers={**_headers(digest), "Location": url, "Content-Length": "0"})
        return await _stream(request, digest, size)
    await request.app[VERIFIER].ensure(store, offload(request), digest)  # verify_on_read (..verify)
    path = store.blobs.local_path(digest)
    if path is not None:
        response = BlobFileResponse(path, chunk_size=1 << 20, headers=_headers(digest))
        response.content_type = "application/octet-stream"
        return response
    return await _stream(request, digest, size)


async def _stream(request: web.Request, digest: Digest, size: int) -> web.StreamResponse:
    """For backends without a local file: stream, honouring one ``bytes=`` range."""
    start, end = 0, size
    status = 200
    headers = _headers(digest)
    range_header = request.headers.get("Range")
    if range_header:
        match = _RANGE.match(range_header.strip())
        if match is None or match.groups() == ("", ""):
            raise RegistryError(ErrorCode.RANGE_INVALID, f"unsupported Range {range_header!r}",
                                headers={"Content-Range": f"bytes */{size}"})
        first, last = match.groups()
        if first == "":
            start, end = max(0, size - int(last)), size
        else:
            start, end = int(first), min(size, int(last) + 1) if last else size
        if start >= size or start >= end:
            raise RegistryError(ErrorCode.RANGE_INVALID, f"Range {range_header!r} is outside the blob's {size} bytes",
                                headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    store, verifier = storage(request), request.app[VERIFIER]
    chunks: AsyncIterator[bytes]
    if store.blobs.remote:  # verify_on_read (..verify): a whole read is hashed on the way, a range first
        whole = start == 0 and end == size
        await verifier.ensure(store, offload(request), digest, hashed_on_the_way=whole)
        chunks = verifier.stream(store, offload(request), digest, start, end)
    else:
        chunks = store.blobs.read(digest, start, end)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = end - start
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionResetError:  # the client went away
        raise
    except Exception as exc:
        # the status and headers are out: an error answer would be written into the body (completing the
        # blob's length with the error's bytes), so the connection is cut and the client gets a short body
        log.warning("GET %s broken off after the headers: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    digest = digest_param(request.match_info["digest"])
    try:
        unlinked = await offload(request).run(storage(request).metadata.unlink_blob, name, digest)
    except BlobReferenced as exc:
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            f"blob {digest} is used by manifest {exc.manifest} in {name}: delete the manifests that use it first",
            detail={"digest": str(digest), "manifest": str(exc.manifest)},
            status=405,
            headers={"Allow": "GET, HEAD"},
        ) from None
    if not unlinked:
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not in repository {name}",
                            detail={"digest": str(digest)})
    return web.Response(status=202, headers={"Docker-Content-Digest": str(digest), "Content-Length": "0"})

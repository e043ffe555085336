"""end-3/7/9: ``HEAD``/``GET``/``PUT``/``DELETE /v2/<name>/manifests/<reference>``.

GET serves the stored bytes with their stored media type. Accept negotiation follows CNCF
distribution: when the client lists media types and the stored one is not among them (nor matched
by a wildcard), the answer is MANIFEST_UNKNOWN 404; no Accept header or ``*/*`` accepts everything.
DELETE by digest removes the manifest (and its tags); DELETE by tag removes only the tag.
GET/HEAD answer ``ETag: "<digest>"``; PUT by tag honours ``If-Match`` / ``If-None-Match`` (lamina's
conditional tag update, :mod:`lamina.registry.conditional`), other requests refuse them (400).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from lamina.oci import Digest
from lamina.store import ManifestRecord, MetadataStore, MissingReference, TagImmutable, TagPreconditionFailed

from ..conditional import CONDITION_CHECKED_HEADER, parse_tag_condition, precondition_failed, refuse_conditions
from ..errors import ErrorCode, RegistryError
from ..immutability import is_immutable, tag_immutable_error
from ..pacing import paced_chunks
from ..services import Offloader
from ..validation import check_manifest, lookup_reference, parse_reference_param
from ._common import config, offload, storage

__all__ = ["delete", "get", "put"]

log = logging.getLogger("lamina.registry")
_PULL_RECORD_INTERVAL = 60.0  # seconds: pull times are for retention, not an audit log


def _acceptable(request: web.Request, media_type: str) -> bool:
    values = request.headers.getall("Accept", ())
    if not values:
        return True
    kind = media_type.split("/", 1)[0]
    listed = False
    for value in values:
        for item in value.split(","):
            accepted = item.split(";", 1)[0].strip()
            if not accepted:
                continue
            listed = True
            if accepted in (media_type, "*/*", f"{kind}/*"):
                return True
    return not listed


def _unknown(name: str, reference: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"manifest {reference} is not in repository {name}",
                         detail={"name": name, "reference": reference})


async def get(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    reference = request.match_info["reference"]
    lookup_reference(name, reference)
    metadata = storage(request).metadata
    record = metadata.get_manifest(name, reference)
    if record is None:
        raise _unknown(name, reference)
    if not _acceptable(request, record.media_type):
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {reference} in {name} is {record.media_type}, which the request's Accept header does not list",
            detail={"mediaType": record.media_type},
        )
    headers = {"Docker-Content-Digest": str(record.digest), "ETag": f'"{record.digest}"'}
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(record.content))
        return web.Response(status=200, headers=headers, content_type=record.media_type)
    _record_pull(offload(request), metadata, record)
    return web.Response(status=200, body=record.content, headers=headers, content_type=record.media_type)


def _record_pull(work: Offloader, metadata: MetadataStore, record: ManifestRecord) -> None:
    """At most once a minute per manifest, in a thread, not awaited: a GET never waits for a write."""
    now = time.time()
    if record.last_pulled_at is None or now - record.last_pulled_at > _PULL_RECORD_INTERVAL:
        future = work.submit(metadata.record_pull, record.repository, record.digest, now)
        future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("recording a pull time failed: %s", future.exception())


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest is {request.content_length} bytes, more than the limit of {limit} (max_manifest_bytes)",
        )
    body = bytearray()
    limits = config(request).limits  # a stalled or trickled body: 408 (lamina.registry.pacing)
    async for chunk in paced_chunks(request.content, limits, ErrorCode.MANIFEST_INVALID, "send the manifest again"):
        body += chunk
        if len(body) > limit:
            raise RegistryError(ErrorCode.MANIFEST_INVALID,
                                f"manifest is more than the limit of {limit} bytes (max_manifest_bytes)")
    return bytes(body)


async def put(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    reference = request.match_info["reference"]
    settings = config(request)
    parse_reference_param(reference)
    body = await _read_body(request, settings.max_manifest_bytes)
    checked = check_manifest(name, reference, body, request.headers.get("Content-Type"), settings)
    record = checked.record
    if checked.tag is None:
        refuse_conditions(request.headers, f"a PUT by digest ({reference})")
    condition = parse_tag_condition(request.headers)
    try:
        immutable = checked.tag is not None and is_immutable(settings.ops.immutable_tags, name, checked.tag)
        await offload(request).run(
            storage(request).metadata.put_manifest, record, checked.references, checked.tag, immutable, condition
        )
    except MissingReference as exc:
        raise RegistryError(ErrorCode.MANIFEST_BLOB_UNKNOWN, str(exc), detail={"digest": str(exc.digest)}) from None
    except TagImmutable as exc:
        raise tag_immutable_error(name, exc.tag, str(exc.current), str(record.digest)) from None
    except TagPreconditionFailed as exc:
        assert condition is not None
        raise precondition_failed(name, exc.tag, exc.current, condition) from None
    headers = {
        "Location": f"/v2/{name}/manifests/{record.digest}",
        "Docker-Content-Digest": str(record.digest),
        "Content-Length": "0",
    }
    if record.subject is not None:
        headers["OCI-Subject"] = str(record.subject)
    if condition is not None:
        headers[CONDITION_CHECKED_HEADER] = "checked"
    return web.Response(status=201, headers=headers)


async def delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    reference = request.match_info["reference"]
    target = lookup_reference(name, reference)
    refuse_conditions(request.headers, "DELETE")
    metadata = storage(request).metadata
    if isinstance(target, Digest):
        found = await offload(request).run(metadata.delete_manifest, name, target)
    else:
        found = await offload(request).run(metadata.delete_tag, name, target)
    if not found:
        raise _unknown(name, reference)
    return web.Response(status=202, headers={"Content-Length": "0"})

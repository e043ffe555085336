"""end-12a/12b: ``GET /v2/<name>/referrers/<digest>`` - an OCI image index of the manifests whose
``subject`` is ``<digest>``, optionally filtered by ``?artifactType=`` (then ``OCI-Filters-Applied``),
read from the raw query so that ``a+b`` and ``a%2Bb`` both mean ``a+b``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from lamina.oci import canonical_json
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import FormatError, check_media_type

from ..errors import ErrorCode, RegistryError
from ._common import digest_param, next_link, page_params, raw_query_param, storage

__all__ = ["list_referrers"]


async def list_referrers(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    subject = digest_param(request.match_info["digest"])
    artifact_type = raw_query_param(request, "artifactType") or None
    if artifact_type is not None:
        try:
            check_media_type(artifact_type, "artifactType")
        except FormatError as exc:
            raise RegistryError(ErrorCode.UNSUPPORTED, str(exc), status=400) from None
    n, last_text = page_params(request, "referrers")  # limits.referrers_page_size; Link to the next page
    last = digest_param(last_text, "last") if last_text is not None else None
    found = list(storage(request).metadata.referrers(name, subject, artifact_type, last, n + 1))
    page_link = None
    if len(found) > n:
        found = found[:n]
        if found:
            kept = {"artifactType": artifact_type} if artifact_type is not None else {}
            page_link = next_link(request.path, n, str(found[-1].digest), **kept)
    descriptors: list[dict[str, Any]] = []
    for ref in found:
        entry: dict[str, Any] = {"mediaType": ref.media_type, "digest": str(ref.digest), "size": ref.size}
        if ref.artifact_type:
            entry["artifactType"] = ref.artifact_type
        if ref.annotations_json:
            entry["annotations"] = json.loads(ref.annotations_json)
        descriptors.append(entry)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type is not None else {}
    if page_link is not None:
        headers["Link"] = page_link
    body = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors})
    return web.Response(body=body, headers=headers, content_type=mt.OCI_INDEX)

"""end-12a/12b: ``GET /v2/<name>/referrers/<digest>`` - an OCI image index of the manifests whose
``subject`` is ``<digest>``, optionally filtered by ``?artifactType=`` (then ``OCI-Filters-Applied``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from lamina.oci import canonical_json
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import FormatError, check_media_type

from ..errors import ErrorCode, RegistryError
from ._common import digest_param, storage

__all__ = ["list_referrers"]


async def list_referrers(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    subject = digest_param(request.match_info["digest"])
    artifact_type = request.query.get("artifactType") or None
    if artifact_type is not None:
        try:
            check_media_type(artifact_type, "artifactType")
        except FormatError as exc:
            raise RegistryError(ErrorCode.UNSUPPORTED, str(exc), status=400) from None
    descriptors: list[dict[str, Any]] = []
    for ref in storage(request).metadata.referrers(name, subject, artifact_type):
        entry: dict[str, Any] = {"mediaType": ref.media_type, "digest": str(ref.digest), "size": ref.size}
        if ref.artifact_type:
            entry["artifactType"] = ref.artifact_type
        if ref.annotations_json:
            entry["annotations"] = json.loads(ref.annotations_json)
        descriptors.append(entry)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type is not None else {}
    body = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors})
    return web.Response(body=body, headers=headers, content_type=mt.OCI_INDEX)

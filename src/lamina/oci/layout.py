"""The OCI image layout (image-spec image-layout.md): ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``.

Pure helpers that name paths and build the two small JSON files; writing them is the caller's job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from . import mediatypes as mt
from .descriptor import Descriptor
from .digest import Digest

__all__ = ["REF_NAME_ANNOTATION", "blob_path", "index_entry", "index_json", "oci_layout_json"]

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.encoded}"


def oci_layout_json() -> bytes:
    return json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}).encode()


def index_entry(
    media_type: str, digest: Digest, size: int, *, ref_name: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """An ``index.json`` entry for the manifest or index ``digest``: ``annotations`` plus, when given, the
    ``org.opencontainers.image.ref.name`` of ``ref_name``."""
    merged = dict(annotations or {})
    if ref_name:
        merged[REF_NAME_ANNOTATION] = ref_name
    return Descriptor(media_type, digest, size, annotations=merged or None)


def index_json(manifests: Iterable[Descriptor]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [d.dump() for d in manifests]}
    return json.dumps(doc, separators=(",", ":")).encode()

"""Image manifests and indexes: OCI image-spec manifest.md / image-index.md and Docker schema2.

``parse_manifest`` is the single strict entry point used by the registry on PUT and by clients on
GET: the body must be a JSON object, ``schemaVersion`` 2, its ``mediaType`` (when present) must agree
with the Content-Type it was sent with, and every descriptor must be well formed. Schema1 is refused.
``classify`` gives the kind a registry records for consoles and retention: image, image index, build
cache (BuildKit cacheconfig.v0, in either export form) or other artifact.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import mediatypes as mt
from .descriptor import Descriptor, FormatError, check_media_type
from .digest import Digest, digest_of

__all__ = [
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "ManifestKind",
    "canonical_json",
    "classify",
    "is_legacy_buildkit_cache",
    "parse_manifest",
]


class ManifestKind(enum.StrEnum):
    IMAGE = "image"
    INDEX = "index"
    BUILD_CACHE = "cache"
    ARTIFACT = "artifact"

    @property
    def label(self) -> str:
        return {"image": "Image", "index": "Image index", "cache": "Build cache", "artifact": "Other artifact"}[
            self.value
        ]


def canonical_json(value: Any) -> bytes:
    """Compact JSON as Go's encoder writes it (no spaces, ``<>&`` kept literal for readability)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """An OCI image manifest or Docker schema 2 manifest (image-spec manifest.md): config and layers."""

    media_type: str | None
    config: Descriptor
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] | None = None

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2}
        if self.media_type is not None:
            out["mediaType"] = self.media_type
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.dump()
        out["layers"] = [d.dump() for d in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.dump()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.dump())

    @property
    def effective_artifact_type(self) -> str:
        """artifactType, else the config media type (the referrers API's rule)."""
        return self.artifact_type or self.config.media_type

    def blob_references(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


@dataclass(frozen=True, slots=True)
class ImageIndex:
    """An OCI image index or Docker manifest list (image-spec image-index.md): the manifests it lists."""

    media_type: str | None
    manifests: tuple[Descriptor, ...]
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] | None = None

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2}
        if self.media_type is not None:
            out["mediaType"] = self.media_type
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [d.dump() for d in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.dump()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.dump())

    @property
    def effective_artifact_type(self) -> str | None:
        return self.artifact_type


Manifest = ImageManifest | ImageIndex


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise FormatError(f"{where}: must be an object of string values")
    return dict(value)


def parse_manifest(data: bytes, content_type: str | None = None, *, allow_empty_layers: bool = True) -> Manifest:
    """Parse ``data`` strictly; ``content_type`` is the media type it was sent or served with."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        raise FormatError("manifest nests JSON too deeply to parse") from None
    if not isinstance(doc, dict):
        raise FormatError("manifest must be a JSON object")
    content_type = (content_type or "").split(";", 1)[0].strip() or None
    declared = doc.get("mediaType")
    if declared is not None:
        check_media_type(declared, "mediaType")  # a string before any lookup: [] or {} is a FormatError, not a crash
    if content_type in mt.SCHEMA1_MEDIA_TYPES or declared in mt.SCHEMA1_MEDIA_TYPES or doc.get("schemaVersion") == 1:
        raise FormatError(
            "Docker schema1 manifests are not supported (deprecated and unsigned-insecure); "
            "push with Docker schema2 or OCI media types"
        )
    if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
        raise FormatError(f"schemaVersion must be 2, got {doc.get('schemaVersion')!r}")
    if declared is not None and content_type is not None and declared != content_type:
        raise FormatError(f"mediaType {declared!r} does not match the Content-Type {content_type!r}")
    media_type = declared or content_type
    if media_type is None:
        # Neither says: infer from the shape, as the image-spec allows for mediaType-less documents.
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.MANIFEST_MEDIA_TYPES:
        raise FormatError(f"unsupported manifest media type {media_type!r}")
    if media_type in mt.IMAGE_MEDIA_TYPES:
        if "manifests" in doc:
            raise FormatError(f"an image manifest ({media_type}) must not have 'manifests'")
        return _parse_image(doc, declared, media_type, allow_empty_layers)
    if "config" in doc or "layers" in doc:
        raise FormatError(f"an image index ({media_type}) must not have 'config' or 'layers'")
    return _parse_index(doc, declared, media_type)


def _artifact_type(doc: dict[str, Any]) -> str | None:
    value = doc.get("artifactType")
    return None if value is None else check_media_type(value, "artifactType")


def _parse_image(doc: dict[str, Any], declared: str | None, media_type: str, allow_empty: bool) -> ImageManifest:
    if "config" not in doc:
        raise FormatError("image manifest: 'config' is required")
    config = Descriptor.parse(doc["config"], "config")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise FormatError("image manifest: 'layers' must be an array")
    layers = tuple(Descriptor.parse(d, f"layers[{i}]") for i, d in enumerate(layers_doc))
    if not layers and not allow_empty:
        raise FormatError(
            "image manifest: 'layers' is empty; strict registries (like ECR) refuse it - "
            "artifacts should list the empty descriptor (application/vnd.oci.empty.v1+json)"
        )
    if media_type == mt.DOCKER_MANIFEST_V2 and config.media_type != mt.DOCKER_CONFIG:
        raise FormatError(f"Docker schema2 manifest: config mediaType must be {mt.DOCKER_CONFIG}")
    artifact_type = _artifact_type(doc)
    if artifact_type is not None and media_type != mt.OCI_MANIFEST:
        raise FormatError("artifactType is only allowed in OCI manifests")
    subject = doc.get("subject")
    return ImageManifest(
        media_type=declared,
        config=config,
        layers=layers,
        artifact_type=artifact_type,
        subject=Descriptor.parse(subject, "subject") if subject is not None else None,
        annotations=_annotations(doc.get("annotations"), "annotations"),
    )


def _parse_index(doc: dict[str, Any], declared: str | None, media_type: str) -> ImageIndex:
    manifests_doc = doc.get("manifests")
    if not isinstance(manifests_doc, list):
        raise FormatError("image index: 'manifests' must be an array")
    manifests = tuple(Descriptor.parse(d, f"manifests[{i}]") for i, d in enumerate(manifests_doc))
    subject = doc.get("subject")
    return ImageIndex(
        media_type=declared,
        manifests=manifests,
        artifact_type=_artifact_type(doc),
        subject=Descriptor.parse(subject, "subject") if subject is not None else None,
        annotations=_annotations(doc.get("annotations"), "annotations"),
    )


def is_legacy_buildkit_cache(index: ImageIndex) -> bool:
    """BuildKit's ``image-manifest=false`` export: an index listing layer blobs and the cacheconfig."""
    return any(d.media_type == mt.BUILDKIT_CACHE_CONFIG for d in index.manifests)


def classify(manifest: Manifest) -> ManifestKind:
    if isinstance(manifest, ImageIndex):
        if is_legacy_buildkit_cache(manifest):
            return ManifestKind.BUILD_CACHE
        return ManifestKind.ARTIFACT if manifest.artifact_type else ManifestKind.INDEX
    if manifest.config.media_type == mt.BUILDKIT_CACHE_CONFIG:
        return ManifestKind.BUILD_CACHE
    if manifest.artifact_type or manifest.config.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return ManifestKind.ARTIFACT
    return ManifestKind.IMAGE


def manifest_digest(data: bytes) -> Digest:
    return digest_of(data)

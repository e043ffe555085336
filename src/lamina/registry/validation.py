"""Manifest PUT validation, as strict as Amazon ECR (distribution-spec "Pushing Manifests").

Pure decisions, no I/O: :func:`check_manifest` turns a request body into the record to store and the
references the metadata store must find linked in the repository *inside its transaction* (so a
concurrent delete cannot slip between check and store). Policies:

- size cap ``max_manifest_bytes`` (4 MiB): MANIFEST_INVALID, as CNCF distribution v3 answers;
- JSON nesting cap ``max_json_depth`` (64), checked before parsing: MANIFEST_INVALID;
- the body must parse and agree with its Content-Type (schema1 refused): MANIFEST_INVALID;
- PUT by digest: the URL digest must be the body's digest (sha256 or sha512): DIGEST_INVALID;
- empty ``layers`` refused unless ``allow_empty_layers`` (artifacts use the OCI empty descriptor);
- BuildKit's legacy cache index (children are blobs, not manifests): ``legacy_buildkit_cache`` =
  ``accept`` checks the children as blobs (recorded as references so GC keeps them) or ``reject``
  answers MANIFEST_INVALID pointing at ``image-manifest=true,oci-mediatypes=true``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from lamina.oci import (
    Digest,
    DigestError,
    FormatError,
    ImageIndex,
    ImageManifest,
    classify,
    digest_of,
    exceeds_json_depth,
    is_legacy_buildkit_cache,
    is_valid_tag,
    parse_digest,
    parse_manifest,
)
from lamina.oci import mediatypes as mt
from lamina.store import ManifestRecord, ManifestReference

from .config import RegistryConfig
from .errors import ErrorCode, RegistryError

__all__ = ["CheckedManifest", "check_manifest", "lookup_reference", "parse_reference_param"]

LEGACY_CACHE_HINT = (
    "BuildKit's legacy cache index (its manifests[] are layer blobs and the cacheconfig, not manifests) is "
    "refused by this registry (legacy_buildkit_cache = \"reject\"); export the cache with "
    "--export-cache type=registry,ref=...,image-manifest=true,oci-mediatypes=true"
)
_FOREIGN = frozenset({mt.DOCKER_FOREIGN_LAYER, mt.OCI_LAYER_NONDIST_GZIP})


@dataclass(frozen=True, slots=True)
class CheckedManifest:
    record: ManifestRecord
    references: tuple[ManifestReference, ...]
    tag: str | None


def parse_reference_param(reference: str) -> Digest | str:
    """A manifest path reference: a digest (contains ':') or a tag; DIGEST_INVALID / TAG_INVALID."""
    if ":" in reference:
        try:
            return parse_digest(reference)
        except DigestError as exc:
            raise RegistryError(ErrorCode.DIGEST_INVALID, str(exc), detail={"reference": reference}) from None
    if not is_valid_tag(reference):
        raise RegistryError(
            ErrorCode.TAG_INVALID,
            f"invalid tag {reference!r}: expected [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}",
            detail={"tag": reference},
        )
    return reference


def lookup_reference(name: str, reference: str) -> Digest | str:
    """A manifest path reference to look up (GET, HEAD, DELETE): like :func:`parse_reference_param`, but a
    reference that is no valid tag names no manifest, so it answers MANIFEST_UNKNOWN 404 (what the OCI
    conformance suite expects for ``.INVALID_MANIFEST_NAME``, and what CNCF distribution's router answers)."""
    if ":" not in reference and not is_valid_tag(reference):
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {reference!r} is not in repository {name}: it is neither a valid tag "
            f"([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}) nor a digest",
            detail={"name": name, "reference": reference},
        )
    return parse_reference_param(reference)


def _references(manifest: ImageManifest | ImageIndex, config: RegistryConfig) -> tuple[ManifestReference, ...]:
    if isinstance(manifest, ImageManifest):
        return tuple(
            ManifestReference(d.digest, d.size)
            for d in manifest.blob_references()
            if not (d.media_type in _FOREIGN and d.urls)
        )
    if is_legacy_buildkit_cache(manifest):
        if config.legacy_buildkit_cache == "reject":
            raise RegistryError(ErrorCode.MANIFEST_INVALID, LEGACY_CACHE_HINT)
        return tuple(ManifestReference(d.digest, d.size) for d in manifest.manifests)
    for i, child in enumerate(manifest.manifests):
        if child.media_type not in mt.MANIFEST_MEDIA_TYPES:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                f"manifests[{i}]: media type {child.media_type!r} is not a manifest media type",
            )
    return tuple(ManifestReference(d.digest, d.size, is_manifest=True) for d in manifest.manifests)


def check_manifest(
    name: str, reference: str, body: bytes, content_type: str | None, config: RegistryConfig
) -> CheckedManifest:
    """Validate a PUT body for ``name``/``reference``; raise RegistryError with the spec code."""
    if len(body) > config.max_manifest_bytes:
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest is {len(body)} bytes, more than the limit of {config.max_manifest_bytes} (max_manifest_bytes)",
        )
    target = parse_reference_param(reference)
    if exceeds_json_depth(body, config.max_json_depth):
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest nests JSON more than {config.max_json_depth} levels deep, the limit (max_json_depth)",
            detail={"limit": config.max_json_depth},
        )
    try:
        manifest = parse_manifest(body, content_type, allow_empty_layers=config.allow_empty_layers)
    except FormatError as exc:
        raise RegistryError(ErrorCode.MANIFEST_INVALID, str(exc)) from None
    algorithm = target.algorithm if isinstance(target, Digest) else "sha256"
    digest = digest_of(body, algorithm)
    if isinstance(target, Digest) and target != digest:
        raise RegistryError(ErrorCode.DIGEST_INVALID, f"manifest body has digest {digest}, not {target} from the URL",
                            detail={"expected": str(target), "actual": str(digest)})
    media_type = manifest.media_type or (content_type or "").split(";", 1)[0].strip() or (
        mt.OCI_INDEX if isinstance(manifest, ImageIndex) else mt.OCI_MANIFEST
    )
    artifact_type = (
        manifest.effective_artifact_type if isinstance(manifest, ImageManifest) else manifest.artifact_type
    )
    record = ManifestRecord(
        repository=name,
        digest=digest,
        media_type=media_type,
        content=body,
        kind=classify(manifest).value,
        artifact_type=artifact_type,
        subject=manifest.subject.digest if manifest.subject is not None else None,
        annotations_json=json.dumps(dict(manifest.annotations)) if manifest.annotations else None,
        pushed_at=time.time(),
        last_pulled_at=None,
    )
    return CheckedManifest(record, _references(manifest, config), None if isinstance(target, Digest) else target)

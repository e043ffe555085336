"""Resolve an image reference for one platform: index (OCI or Docker manifest list) -> manifest -> config.

Platform matching follows containerd's ``platforms`` package: architectures and variants are
normalised first (``aarch64`` = ``arm64``, arm64's default variant is ``v8``, arm's is ``v7``, amd64's is
``v1``), an exact match wins, and an ``arm/v7`` (or ``amd64/v3``) request accepts an older variant of the same
architecture when nothing better exists. Attestation entries (``unknown/unknown``) are never chosen.
``select_platform`` / ``resolve_platform`` are pure; ``resolve_image`` does the fetching, verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..oci import (
    Descriptor,
    Digest,
    FormatError,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    Manifest,
    Platform,
    parse_manifest,
)
from ..oci import normalize_platform as oci_normalize_platform
from .client import RegistryClient
from .errors import NoMatchingPlatform, RegistryError
from .manifests import FetchedManifest

__all__ = ["ResolvedImage", "normalize_platform", "resolve_image", "resolve_platform", "select_platform"]

_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


def normalize_platform(platform: Platform) -> tuple[str, str, str | None]:
    """(os, architecture, variant) to match with: containerd's normal form (:func:`lamina.oci.normalize_platform`)
    with the architecture's default variant written out, so ``arm64`` and ``arm64/v8`` compare equal."""
    normal = oci_normalize_platform(platform)
    variant = normal.variant
    if variant is not None and variant.isdigit():
        variant = f"v{variant}"  # "linux/amd64/2" as an index may spell it
    return normal.os, normal.architecture, variant or _DEFAULT_VARIANT.get(normal.architecture)


def _variant_number(variant: str | None) -> int | None:
    if variant and variant.startswith("v") and variant[1:].isdigit():
        return int(variant[1:])
    return None


def select_platform(index: ImageIndex, platform: Platform) -> Descriptor:
    """The index entry to use for ``platform``; :class:`NoMatchingPlatform` lists the ones offered."""
    want_os, want_arch, want_variant = normalize_platform(platform)
    candidates = [d for d in index.manifests if d.platform is not None and d.platform.os != "unknown"]
    best: tuple[int, int, Descriptor] | None = None
    for position, desc in enumerate(candidates):
        assert desc.platform is not None
        os_, arch, variant = normalize_platform(desc.platform)
        if os_ != want_os or arch != want_arch:
            continue
        if variant == want_variant:
            return desc
        have, want = _variant_number(variant), _variant_number(want_variant)
        # An older variant runs on a newer CPU (arm v6 on v7, amd64 v2 on v3); prefer the newest of those.
        if have is not None and want is not None and have < want and (best is None or have > best[0]):
            best = (have, position, desc)
    if best is not None:
        return best[2]
    offered = ", ".join(sorted({str(d.platform) for d in candidates if d.platform})) or "none"
    raise NoMatchingPlatform(None, "MANIFEST_UNKNOWN", f"no manifest for platform {platform} (index offers: {offered})")


def resolve_platform(index_bytes: bytes, platform: Platform, media_type: str | None = None) -> Descriptor:
    """Pure: parse an index (OCI or Docker manifest list) and pick the entry for ``platform``."""
    index = parse_manifest(index_bytes, media_type)
    if not isinstance(index, ImageIndex):
        raise FormatError("expected an image index or manifest list, got an image manifest")
    return select_platform(index, platform)


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """Everything a build needs to start from an image, all verified: nothing of its layers is fetched."""

    registry: str
    repository: str
    index_digest: Digest | None  # the multi-platform index the reference named, if it named one
    manifest_digest: Digest
    manifest_media_type: str
    manifest_bytes: bytes
    manifest: ImageManifest
    config_bytes: bytes
    config: ImageConfig


def _parse_fetched(client: RegistryClient, repo: str, fetched: FetchedManifest, reference: str) -> Manifest:
    """Parse a manifest the registry sent; bytes that are not one are MANIFEST_INVALID naming ``reference``."""
    try:
        return parse_manifest(fetched.data, fetched.media_type)
    except FormatError as exc:
        raise RegistryError(None, "MANIFEST_INVALID", str(exc), registry=client.registry, repository=repo,
                            obj=f"manifest {reference}") from None


async def resolve_image(client: RegistryClient, repo: str, reference: str, platform: Platform) -> ResolvedImage:
    """Fetch ``repo:reference`` (tag or digest), descend an index to ``platform``, fetch the config."""
    fetched = await client.get_manifest(repo, reference)
    index_digest: Digest | None = None
    doc = _parse_fetched(client, repo, fetched, reference)
    if isinstance(doc, ImageIndex):
        index_digest = fetched.digest
        try:
            chosen = select_platform(doc, platform)
        except NoMatchingPlatform as exc:
            raise NoMatchingPlatform(None, exc.code, exc.message, registry=client.registry, repository=repo,
                                     obj=f"manifest {reference}") from None
        fetched = await client.get_manifest(repo, str(chosen.digest))
        if len(fetched.data) != chosen.size:
            raise RegistryError(None, "SIZE_INVALID", f"{len(fetched.data)} bytes, the index says {chosen.size}",
                                registry=client.registry, repository=repo, obj=f"manifest {chosen.digest}")
        doc = _parse_fetched(client, repo, fetched, str(chosen.digest))
        if not isinstance(doc, ImageManifest):
            raise RegistryError(None, "MANIFEST_INVALID", f"index entry for {platform} is itself an index",
                                registry=client.registry, repository=repo, obj=f"manifest {chosen.digest}")
    config_bytes = await client.fetch_blob(repo, doc.config.digest, size=doc.config.size, kind="config")
    try:
        config = ImageConfig.parse(config_bytes)
    except FormatError as exc:
        raise RegistryError(None, "CONFIG_INVALID", str(exc), registry=client.registry, repository=repo,
                            obj=f"config {doc.config.digest}") from None
    return ResolvedImage(
        registry=client.registry, repository=repo, index_digest=index_digest, manifest_digest=fetched.digest,
        manifest_media_type=fetched.media_type, manifest_bytes=fetched.data, manifest=doc,
        config_bytes=config_bytes, config=config,
    )

"""Images resolved without a registry: OCI image layouts on disk, and the record of earlier resolutions.

``oci-layout://PATH[:TAG|@DIGEST]`` (``--build-context NAME=oci-layout://...``) is resolved as BuildKit's
oci-layout source does: the ``index.json`` entry whose ``org.opencontainers.image.ref.name`` is TAG (or
whose ``io.containerd.image.name`` ends in ``:TAG``), or the blob DIGEST; an index is descended to the
build platform; every blob is read from ``PATH/blobs`` and checked against its digest. Its layers are
lazy like a registry image's, with a ``LAYOUT_SOURCE_PREFIX`` source.

:class:`BaseRecords` keeps, in the state directory, the manifest and config each base image reference
resolved to last (``<root>/resolved/<sha256 of ref and platform>.json``). A build whose registry cannot
be reached (connection refused, DNS, TLS, timeouts: the client's RegistryUnreachable) then builds from
that record, saying so, as Docker builds from a base image it pulled before; ``--pull`` turns the
fallback off: every base image is resolved at its registry or the build fails. A 404 or 401 never
falls back: the registry answered.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from lamina.build.images import LAYOUT_REF_PREFIX, LAYOUT_SOURCE_PREFIX, SourceImage, source_image
from lamina.client import RegistryUnreachable, select_platform
from lamina.oci import (
    Digest,
    DigestError,
    FormatError,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    Platform,
    digest_of,
    parse_digest,
    parse_manifest,
)
from lamina.oci.layout import REF_NAME_ANNOTATION

__all__ = ["BaseRecords", "LayoutError", "resolve_layout"]

_IMAGE_NAME_ANNOTATION = "io.containerd.image.name"


class LayoutError(ValueError):
    """An OCI layout image that cannot be used; the message names the layout and what is wrong."""


def _read_blob(root: Path, digest: Digest, ref: str) -> bytes:
    path = root / "blobs" / digest.algorithm / digest.encoded
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LayoutError(f"{ref}: blob {digest} missing from the layout ({exc.strerror})") from None
    if digest_of(data) != digest:
        raise LayoutError(f"{ref}: blob {digest} does not match its digest")
    return data


def _split(ref: str) -> tuple[Path, str | None, Digest | None]:
    text = ref.removeprefix(LAYOUT_REF_PREFIX)
    at = text.rfind("@")
    if at != -1:
        try:
            return Path(text[:at]), None, parse_digest(text[at + 1:])
        except DigestError as exc:
            raise LayoutError(f"{ref}: {exc}") from None
    colon = text.rfind(":")
    if colon != -1 and "/" not in text[colon + 1:]:
        return Path(text[:colon]), text[colon + 1:], None
    return Path(text), "latest", None


def _pick(index: ImageIndex, tag: str, ref: str) -> Digest:
    for desc in index.manifests:
        annotations = desc.annotations or {}
        if annotations.get(REF_NAME_ANNOTATION) == tag or annotations.get(_IMAGE_NAME_ANNOTATION, "").endswith(
            f":{tag}"
        ):
            return desc.digest
    tags = sorted({(d.annotations or {}).get(REF_NAME_ANNOTATION, "") for d in index.manifests} - {""})
    raise LayoutError(f"{ref}: no image tagged {tag!r} in its index.json (tags: {', '.join(tags) or 'none'})")


def resolve_layout(ref: str, platform: Platform) -> SourceImage:
    """The image ``oci-layout://PATH[:TAG|@DIGEST]`` names, for ``platform``, with lazy layers from PATH."""
    root, tag, digest = _split(ref)
    try:
        top = parse_manifest((root / "index.json").read_bytes())
    except OSError as exc:
        raise LayoutError(f"{ref}: cannot read {root / 'index.json'}: {exc.strerror}") from None
    except FormatError as exc:
        raise LayoutError(f"{ref}: {root / 'index.json'}: {exc}") from None
    if not isinstance(top, ImageIndex):
        raise LayoutError(f"{ref}: {root / 'index.json'} is not an image index")
    chosen = digest if digest is not None else _pick(top, tag or "latest", ref)
    for _ in range(3):  # index.json -> (an index ->) a manifest
        data = _read_blob(root, chosen, ref)
        try:
            doc = parse_manifest(data)
        except FormatError as exc:
            raise LayoutError(f"{ref}: manifest {chosen}: {exc}") from None
        if isinstance(doc, ImageManifest):
            config_bytes = _read_blob(root, doc.config.digest, ref)
            try:
                config = ImageConfig.parse(config_bytes)
            except FormatError as exc:
                raise LayoutError(f"{ref}: config {doc.config.digest}: {exc}") from None
            source = f"{LAYOUT_SOURCE_PREFIX}{root.resolve()}"
            return source_image(ref, source, chosen, doc.layers, config, source)
        assert isinstance(doc, ImageIndex)
        chosen = select_platform(doc, platform).digest
    raise LayoutError(f"{ref}: indexes nested too deep")


class BaseRecords:
    """The last manifest and config each ``(ref, platform)`` resolved to, for builds whose registry is down."""

    def __init__(self, root: Path, notice: Callable[[str], None]) -> None:
        self.dir = Path(root) / "resolved"
        self.notice = notice

    def _path(self, ref: str, platform: Platform) -> Path:
        return self.dir / (hashlib.sha256(f"{ref}\0{platform}".encode()).hexdigest() + ".json")

    def save(self, ref: str, platform: Platform, image: SourceImage, manifest: bytes, config: bytes) -> None:
        path = self._path(ref, platform)
        record = {
            "ref": ref,
            "platform": str(platform),
            "repository": image.repository,
            "manifest_digest": str(image.manifest_digest),
            "manifest": manifest.decode(),
            "config": config.decode(),
        }
        try:
            if path.is_file() and json.loads(path.read_text()).get("manifest_digest") == record["manifest_digest"]:
                return  # unchanged: no write on a warm build
            self.dir.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".record.", dir=self.dir)
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            os.replace(tmp, path)
        except (OSError, ValueError, UnicodeDecodeError):
            return  # a record is an optimisation for offline builds: failing to write one never fails a build

    def fallback(self, ref: str, platform: Platform, error: RegistryUnreachable) -> SourceImage:
        """The recorded resolution of ``ref``, announced; ``error`` again (with a hint) if there is none."""
        path = self._path(ref, platform)
        try:
            record = json.loads(path.read_text())
            manifest_bytes = record["manifest"].encode()
            config_bytes = record["config"].encode()
            digest = parse_digest(record["manifest_digest"])
            manifest = parse_manifest(manifest_bytes)
            config = ImageConfig.parse(config_bytes)
        except (OSError, ValueError, KeyError, FormatError, DigestError):
            raise error from None
        if digest_of(manifest_bytes) != digest or not isinstance(manifest, ImageManifest) \
                or digest_of(config_bytes) != manifest.config.digest:
            raise error from None
        self.notice(f"WARNING: {error}; using {ref} as last resolved ({digest.short}): pass --pull to fail instead")
        repository = record["repository"]
        return source_image(ref, repository, digest, manifest.layers, config, repository)

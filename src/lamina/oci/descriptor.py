"""Content descriptors and platforms (OCI image-spec descriptor.md, image-index.md#platform).

Frozen data with ``parse`` (strict: every field type checked, errors name the field) and ``dump``
(keys in the spec's order, optional fields omitted), so a parse/dump round trip is stable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .digest import Digest, DigestError, parse_digest

__all__ = ["Descriptor", "FormatError", "Platform", "check_media_type"]

# RFC 6838 type "/" subtype, as the image-spec requires for mediaType and artifactType.
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


class FormatError(ValueError):
    """A document does not follow its specification; the message names the offending field."""


def check_media_type(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _MEDIA_TYPE.match(value):
        raise FormatError(f"{where}: invalid media type {value!r}")
    return value


def _string_map(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise FormatError(f"{where}: must be an object of string values")
    return dict(value)


def _string_list(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormatError(f"{where}: must be an array of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Platform:
    """The ``platform`` of an image index entry (image-spec image-index.md): architecture, os and their details."""

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, value: Any, where: str = "platform") -> Platform:
        if not isinstance(value, dict):
            raise FormatError(f"{where}: must be an object")
        arch, os_ = value.get("architecture"), value.get("os")
        if not isinstance(arch, str) or not arch or not isinstance(os_, str) or not os_:
            raise FormatError(f"{where}: architecture and os are required strings")
        variant = value.get("variant")
        os_version = value.get("os.version")
        if variant is not None and not isinstance(variant, str):
            raise FormatError(f"{where}.variant: must be a string")
        if os_version is not None and not isinstance(os_version, str):
            raise FormatError(f"{where}.os.version: must be a string")
        return cls(arch, os_, variant, os_version, _string_list(value.get("os.features"), f"{where}.os.features"))

    @classmethod
    def from_string(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as on the command line (``linux/amd64``, ``linux/arm64/v8``)."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise FormatError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
        return cls(architecture=parts[1], os=parts[0], variant=parts[2] if len(parts) == 3 else None)

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version is not None:
            out["os.version"] = self.os_version
        if self.os_features is not None:
            out["os.features"] = list(self.os_features)
        if self.variant is not None:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (image-spec descriptor.md): media type, digest, size and the optional fields."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] | None = field(default=None, compare=False)
    urls: tuple[str, ...] | None = None
    platform: Platform | None = None
    artifact_type: str | None = None
    data: bytes | None = None

    @classmethod
    def parse(cls, value: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(value, dict):
            raise FormatError(f"{where}: must be an object")
        media_type = check_media_type(value.get("mediaType"), f"{where}.mediaType")
        try:
            digest = parse_digest(value.get("digest"))  # type: ignore[arg-type]
        except DigestError as exc:
            raise FormatError(f"{where}.digest: {exc}") from None
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"{where}.size: must be a non-negative integer, got {size!r}")
        platform = value.get("platform")
        artifact_type = value.get("artifactType")
        if artifact_type is not None:
            check_media_type(artifact_type, f"{where}.artifactType")
        data = value.get("data")
        raw: bytes | None = None
        if data is not None:
            try:
                raw = base64.b64decode(data, validate=True)
            except (ValueError, TypeError):
                raise FormatError(f"{where}.data: not valid base64") from None
            if len(raw) != size or not digest.verify(raw):
                raise FormatError(f"{where}.data: does not match the descriptor's size and digest")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=_string_map(value.get("annotations"), f"{where}.annotations"),
            urls=_string_list(value.get("urls"), f"{where}.urls"),
            platform=Platform.parse(platform, f"{where}.platform") if platform is not None else None,
            artifact_type=artifact_type,
            data=raw,
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls is not None:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode()
        if self.platform is not None:
            out["platform"] = self.platform.dump()
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        return out

"""``--annotation``: OCI annotations on the exported manifest, index and their descriptors, as buildx parses them.

buildx's syntax is ``[TYPE[,TYPE...][[PLATFORM]]:]KEY=VALUE`` with TYPE one of ``manifest`` (the default),
``manifest-descriptor``, ``index`` and ``index-descriptor``; a ``[PLATFORM]`` (``[linux/amd64]``) limits
a manifest annotation to that platform's image. As in BuildKit's image exporter, ``manifest`` annotations
go into each image manifest, ``manifest-descriptor`` ones into the descriptor that points at it (an OCI
layout's ``index.json`` entry, the index's entry, the metadata file's ``containerimage.descriptor``),
``index``/``index-descriptor`` ones into the image index and its descriptor; a single-platform export has
no index, and BuildKit then refuses them ("index annotations not supported for single platform export").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lamina.oci import FormatError, Platform

__all__ = ["ANNOTATION_TYPES", "Annotation", "AnnotationError", "Annotations", "parse_annotations"]

ANNOTATION_TYPES = ("manifest", "manifest-descriptor", "index", "index-descriptor")
_KEY = re.compile(r"^(?:([a-z-]+(?:,[a-z-]+)*)(?:\[([A-Za-z0-9_/.-]+)\])?:)?(\S+)$")


class AnnotationError(ValueError):
    """An ``--annotation`` value buildx would refuse; the message names it."""


@dataclass(frozen=True, slots=True)
class Annotation:
    """One ``--annotation [TYPE[,TYPE][[PLATFORM]]:]K=V`` for one level (manifest, index or a descriptor)."""

    kind: str  # one of ANNOTATION_TYPES
    key: str
    value: str
    platform: Platform | None = None  # only this platform's manifest (or its descriptor)


def _same_platform(a: Platform, b: Platform) -> bool:
    """Equal as containerd compares normalised platforms: ``arm64`` is ``arm64/v8``."""

    def norm(p: Platform) -> tuple[str, str, str]:
        variant = p.variant or ""
        if p.architecture == "arm64" and variant == "v8":
            variant = ""
        return p.os, p.architecture, variant

    return norm(a) == norm(b)


@dataclass(frozen=True)
class Annotations:
    """Every ``--annotation`` of a build; asked per level (and per platform for the manifest levels)."""

    items: tuple[Annotation, ...] = ()

    def _select(self, kind: str, platform: Platform | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.items:
            if item.kind != kind:
                continue
            if item.platform is not None and (platform is None or not _same_platform(item.platform, platform)):
                continue
            out[item.key] = item.value
        return out

    def manifest(self, platform: Platform | None) -> dict[str, str]:
        return self._select("manifest", platform)

    def manifest_descriptor(self, platform: Platform | None) -> dict[str, str]:
        return self._select("manifest-descriptor", platform)

    def index(self) -> dict[str, str]:
        return self._select("index", None)

    def index_descriptor(self) -> dict[str, str]:
        return self._select("index-descriptor", None)

    def check_single_platform(self) -> None:
        """A single-platform export has no index: index annotations are an error there, as in BuildKit."""
        if any(item.kind in ("index", "index-descriptor") for item in self.items):
            raise AnnotationError(
                "--annotation index:/index-descriptor: index annotations not supported for single platform export "
                "(build for several --platform values, or use manifest: / manifest-descriptor:)"
            )


def _parse_one(text: str) -> list[Annotation]:
    key_part, sep, value = text.partition("=")
    if not sep:
        raise AnnotationError(f"invalid --annotation {text!r}: expected [TYPE:]KEY=VALUE")
    match = _KEY.match(key_part)
    if match is None:
        raise AnnotationError(
            f"invalid --annotation {text!r}: expected [TYPE[,TYPE...][[PLATFORM]]:]KEY=VALUE "
            f"with TYPE one of {', '.join(ANNOTATION_TYPES)}"
        )
    kinds_text, platform_text, key = match.groups()
    kinds = kinds_text.split(",") if kinds_text else ["manifest"]
    for kind in kinds:
        if kind not in ANNOTATION_TYPES:
            raise AnnotationError(
                f"invalid --annotation {text!r}: unknown annotation type {kind!r} "
                f"(one of {', '.join(ANNOTATION_TYPES)})"
            )
    platform = None
    if platform_text:
        try:
            platform = Platform.from_string(platform_text)
        except FormatError as exc:
            raise AnnotationError(f"invalid --annotation {text!r}: {exc}") from None
        if any(kind.startswith("index") for kind in kinds):
            raise AnnotationError(f"invalid --annotation {text!r}: an index annotation cannot name a platform")
    return [Annotation(kind, key, value, platform) for kind in kinds]


def parse_annotations(values: Iterable[str]) -> Annotations:
    """Parse every ``--annotation`` value in order (a later one with the same level and key wins)."""
    items: list[Annotation] = []
    for text in values:
        items.extend(_parse_one(text))
    return Annotations(tuple(items))

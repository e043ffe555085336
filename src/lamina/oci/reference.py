"""Repository names, tags and image references.

Names and tags follow the distribution-spec's regular expressions (spec.md "Pulling manifests").
References follow Docker's grammar, including its normalisation: ``busybox`` is
``docker.io/library/busybox:latest``; the first component is a registry host when it contains a dot or
a colon or is ``localhost``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .digest import Digest, DigestError, parse_digest

__all__ = [
    "DEFAULT_REGISTRY",
    "NAME_PATTERN",
    "TAG_PATTERN",
    "Reference",
    "ReferenceError",
    "is_valid_name",
    "is_valid_tag",
    "parse_reference",
]

NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
DEFAULT_REGISTRY = "docker.io"
MAX_NAME_LENGTH = 255


class ReferenceError(ValueError):
    """An image reference, repository name or tag that does not follow the grammar."""


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(NAME_PATTERN.match(name))


def is_valid_tag(tag: str) -> bool:
    return bool(TAG_PATTERN.match(tag))


@dataclass(frozen=True, slots=True)
class Reference:
    """An image reference ``registry/repository[:tag][@digest]``, normalised as the docker reference grammar does."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag (default latest)."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse ``[registry/]repository[:tag][@digest]`` with Docker's normalisation."""
    original = text
    if not text or text != text.strip():
        raise ReferenceError(f"invalid reference {original!r}: empty or surrounded by spaces")
    digest: Digest | None = None
    if "@" in text:
        text, _, digest_text = text.partition("@")
        try:
            digest = parse_digest(digest_text)
        except DigestError as exc:
            raise ReferenceError(f"invalid reference {original!r}: {exc}") from None
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not is_valid_tag(tag):
            raise ReferenceError(f"invalid reference {original!r}: bad tag {tag!r}")
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST.match(first):
            raise ReferenceError(f"invalid reference {original!r}: bad registry host {first!r}")
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, text
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not is_valid_name(repository):
        raise ReferenceError(
            f"invalid reference {original!r}: repository {repository!r} must be lowercase components "
            "of [a-z0-9] separated by '.', '_', '__', '-' or '/'"
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry, repository, tag, digest)

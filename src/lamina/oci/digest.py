"""Content digests (OCI image-spec "Digests", descriptor.md#digests).

A digest is ``algorithm ":" encoded``. We accept sha256 everywhere and sha512 where the spec
registers it; anything else is refused by :func:`parse_digest` so callers can answer
``DIGEST_INVALID`` / ``UNSUPPORTED`` without guessing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Digest",
    "DigestError",
    "Hasher",
    "digest_of",
    "parse_digest",
]

# The image-spec grammar: algorithm-component ([a-z0-9]+) joined by [+._-], then ':' and the encoding.
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_LOWER_HEX = frozenset("0123456789abcdef")
SUPPORTED_ALGORITHMS = frozenset(_HEX_LENGTH)


class DigestError(ValueError):
    """The string is not a digest we can verify; ``unsupported`` tells a bad grammar from an unknown algorithm."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A content digest ``algorithm:encoded`` (image-spec descriptor.md "Digests"); ordered, hashable."""

    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @property
    def short(self) -> str:
        """The first 12 hex characters, as people read digests in logs."""
        return self.encoded[:12]

    def hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)

    def verify(self, data: bytes) -> bool:
        return hashlib.new(self.algorithm, data).hexdigest() == self.encoded


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def parse_digest(value: str) -> Digest:
    """Parse and validate ``value``; raise :class:`DigestError` naming what is wrong."""
    if not isinstance(value, str) or not _GRAMMAR.match(value):
        raise DigestError(f"invalid digest {value!r}: expected algorithm:hex, e.g. sha256:<64 hex chars>")
    algorithm, encoded = value.split(":", 1)
    expected = _HEX_LENGTH.get(algorithm)
    if expected is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r} (use sha256)", unsupported=True)
    if len(encoded) != expected or not _LOWER_HEX.issuperset(encoded):  # one C call, not a loop per character
        raise DigestError(f"invalid digest {value!r}: {algorithm} needs {expected} lowercase hex characters")
    return Digest(algorithm, encoded)


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())

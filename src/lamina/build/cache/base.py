"""The cache's data and seams: lazy results keyed by cache key, and the importer/exporter roles.

A cached result is a *lazy* chain of layer descriptors (bottom first): nothing is downloaded or
unpacked until a later step must execute on top of it or an output needs the bytes. Every cache
backend — the local index now, a registry / local-dir / inline cacheconfig.v0 import next — is a
:class:`CacheImporter` (one lookup method over records resolved up front) and optionally a
:class:`CacheExporter`. The solver asks them in order and takes the first hit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from lamina.oci import Descriptor, Digest, parse_digest

__all__ = [
    "BlobVerifier",
    "CacheExporter",
    "CacheImporter",
    "CacheLinker",
    "CachedResult",
    "LayerRef",
    "MissExplainer",
    "utc_now",
]


def utc_now() -> str:
    """Now as RFC 3339 UTC with microseconds: the one format of a layer's ``created`` and a record's times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One layer of a result: its blob descriptor, its uncompressed digest, and where to fetch it.

    ``source`` is a repository reference (``host/repo``) that holds the blob when it is not in the local
    content store (a base image's repository, a remote cache ref); ``None`` means the local store has it.
    """

    descriptor: Descriptor
    diff_id: Digest
    created: str | None = None
    source: str | None = None

    def dump(self) -> dict[str, Any]:
        return {
            "mediaType": self.descriptor.media_type,
            "digest": str(self.descriptor.digest),
            "size": self.descriptor.size,
            "diffID": str(self.diff_id),
            "created": self.created,
            "source": self.source,
        }

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> LayerRef:
        return cls(
            Descriptor(str(doc["mediaType"]), parse_digest(doc["digest"]), int(doc["size"])),
            parse_digest(doc["diffID"]),
            doc.get("created"),
            doc.get("source"),
        )


@dataclass(frozen=True, slots=True)
class CachedResult:
    """What a cache key stands for: the full layer chain of the filesystem after that step."""

    key: Digest
    layers: tuple[LayerRef, ...]
    created_at: str
    origin: str = "local"  # where the hit came from, for "CACHED (local)" / "CACHED (REG/REPO:TAG)"


@runtime_checkable
class CacheImporter(Protocol):
    """A source of cache hits. Remote importers resolve their records up front, so lookups are cheap."""

    name: str

    def lookup(self, key: Digest) -> CachedResult | None: ...


@runtime_checkable
class MissExplainer(Protocol):
    """Optional role: say why ``inputs`` found no record (the first input that differs from the nearest)."""

    def explain(self, slot: str, inputs: Mapping[str, Any]) -> str | None: ...


@runtime_checkable
class BlobVerifier(Protocol):
    """Optional importer role: which of the lazy layers its hits gave are gone from where it keeps them.

    A remote cache ref can be rewritten (and its old layers garbage-collected) between the import and the
    moment an output needs the bytes; the solver asks this once per round, before anything is exported.
    Only layers whose ``source`` is this importer's are checked; an unreachable answer counts as present
    (the existing failure paths then report it)."""

    name: str

    async def missing(self, layers: Collection[LayerRef]) -> set[Digest]: ...


@runtime_checkable
class CacheExporter(Protocol):
    """A sink for results as steps finish — executed *and* cache hits, so ``mode=max`` can export every
    step — and ``finalize(target, *more)`` publishes them once the build's final results are known (one per
    platform; ``mode=min`` keeps only their chains). ``inputs`` (with its ``parent`` key) links each record
    to its input."""

    def add(self, key: Digest, inputs: Mapping[str, Any], result: CachedResult, *, slot: str) -> None: ...

    async def finalize(self, target: CachedResult, *more: CachedResult) -> None: ...


@runtime_checkable
class CacheLinker(Protocol):
    """Optional exporter role: a step known only by its key — its stage was not solved because every
    ``COPY --from`` of it hit, and no cache holds its result — kept as a pure link record."""

    def link(self, key: Digest, inputs: Mapping[str, Any], *, slot: str) -> None: ...

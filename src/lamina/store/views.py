"""What the maintenance roles of the metadata store return: plain records, no database in sight.

The console and lifecycle rules read :class:`ManifestInfo` and :class:`RepositoryInfo`; garbage
collection reads :class:`Garbage`; fsck compares a :class:`Snapshot` with the blob files. Every field is
a plain value (digests as ``algorithm:hex`` text, times as Unix seconds), the same from every backend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Garbage",
    "LoginRow",
    "LoginTrim",
    "ManifestInfo",
    "Reference",
    "RepositoryInfo",
    "Snapshot",
    "repository_bytes",
]


@dataclass(frozen=True, slots=True)
class Reference:
    digest: str
    size: int
    is_manifest: bool


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    repository: str
    digest: str
    media_type: str
    kind: str
    artifact_type: str | None
    subject: str | None
    size: int
    pushed_at: float
    last_pulled_at: float | None
    tags: tuple[str, ...]
    references: tuple[Reference, ...]

    @property
    def last_used(self) -> float:
        """Last pull, or the push when never pulled: what "least recently used" orders by."""
        return max(self.pushed_at, self.last_pulled_at or 0.0)


@dataclass(frozen=True, slots=True)
class RepositoryInfo:
    """A repository's counts; ``bytes`` counts each distinct blob its manifests reference once, plus the
    manifests themselves."""

    name: str
    manifests: int
    tags: int
    bytes: int
    last_push: float | None


def repository_bytes(infos: Sequence[ManifestInfo]) -> int:
    """What :attr:`RepositoryInfo.bytes` would say for these manifests (each distinct blob once)."""
    blobs: dict[str, int] = {}
    for info in infos:
        for ref in info.references:
            if not ref.is_manifest:
                blobs[ref.digest] = ref.size
    return sum(blobs.values()) + sum(info.size for info in infos)


@dataclass
class Garbage:
    """What phase 1 of a garbage collection removed (or, in a dry run, would remove)."""

    untagged: list[tuple[str, str, int]] = field(default_factory=list)  # (repository, digest, manifest size)
    links: list[tuple[str, str, int]] = field(default_factory=list)  # (repository, digest, size)
    live: set[str] = field(default_factory=set)  # blob digests still linked or referenced afterwards


@dataclass(frozen=True, slots=True)
class LoginRow:
    """One key's failed-login counters (the limiter's policy is in lamina.registry.auth.limits)."""

    failures: int  # counted in the current window
    window_start: float
    locked_until: float
    strikes: int  # lockouts so far
    last_failure: float


@dataclass(frozen=True, slots=True)
class LoginTrim:
    """How many keys to keep, and which ones no rule remembers any more: not locked at ``now``, no
    failure since ``window_cutoff`` and none, nor a lockout, since ``quiet_cutoff``."""

    max_tracked: int
    now: float
    window_cutoff: float
    quiet_cutoff: float


@dataclass
class Snapshot:
    """The database at one instant: what fsck compares the files with."""

    links: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))  # digest -> repo, size
    # (repository, manifest digest, target digest, size, is_manifest)
    refs: list[tuple[str, str, str, int, bool]] = field(default_factory=list)
    manifests: set[tuple[str, str]] = field(default_factory=set)  # (repository, digest)
    corrupt_manifests: list[tuple[str, str, str]] = field(default_factory=list)  # (repository, digest, actual)
    tags: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    database_errors: list[str] = field(default_factory=list)  # the database's own consistency check

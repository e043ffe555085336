"""The storage half of online garbage collection: mark in one snapshot, sweep under the write lock.

Why this protocol is safe while pushes continue (the race the registry must never lose: a manifest PUT
that succeeds while one of its blobs is gone):

1. **Links** (one exclusive write transaction): remove every blob link older than the grace period
   that no manifest *of that repository* references (optionally after deleting untagged manifests).
   ``put_manifest`` checks its references against the links inside its own IMMEDIATE transaction, so
   the two are serialised: a manifest committed first keeps its links; one that comes after finds a
   link gone and fails with MANIFEST_BLOB_UNKNOWN.
2. **Files** (small exclusive write transactions): a blob file is deleted only while holding the database
   write lock, after re-checking that no repository links it and no manifest references it, and only if
   the file is older than the grace period. Creating a link (upload commit, mount) checks the file
   exists inside *its* write transaction (``link_blob(..., present=...)``), so a link can never be
   created for a file a sweep is removing, and an upload re-publishes its file (fresh mtime) even when
   an identical blob exists, so a blob just pushed is never older than the grace period.

Read-only callers (dry runs) run the same statements and roll back. The database side is the
metadata store's :class:`lamina.store.roles.GcQueries` role (its statements in :mod:`.statements`; on
PostgreSQL the "write lock" is the GC gate, an advisory lock every link-creating or reference-checking
transaction takes shared and these two phases take exclusive); the file side is :class:`SweepBlobs`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from lamina.oci import Digest

from .paths import StorePaths
from .roles import GcQueries

__all__ = ["FilesystemSweepBlobs", "SweepBlobs", "SweepResult", "sweep"]


class SweepBlobs(Protocol):
    """What phase 2 needs of the blob backend."""

    def modified(self, digest: Digest) -> tuple[int, float] | None:
        """(size, last modification as Unix seconds) of the stored blob, or None when it is gone."""
        ...

    def remove(self, digest: Digest) -> bool:
        """Delete the blob; False when it was already gone."""
        ...


class FilesystemSweepBlobs:
    """:class:`SweepBlobs` over a root's ``blobs/`` directory (mtime: when the upload published it)."""

    def __init__(self, paths: StorePaths) -> None:
        self.paths = paths

    def modified(self, digest: Digest) -> tuple[int, float] | None:
        try:
            st = os.stat(self.paths.blob(digest))
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime

    def remove(self, digest: Digest) -> bool:
        try:
            os.unlink(self.paths.blob(digest))
        except FileNotFoundError:
            return False
        return True


@dataclass
class SweepResult:
    untagged: list[tuple[str, str, int]] = field(default_factory=list)  # (repository, digest, manifest size)
    links: list[tuple[str, str, int]] = field(default_factory=list)  # (repository, digest, size)
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.blobs)


def sweep(
    gc: GcQueries,
    blobs: SweepBlobs,
    stored: Iterable[Digest],
    *,
    grace_seconds: float,
    delete_untagged: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    batch: int = 64,
    before_batch: Callable[[], None] | None = None,
) -> SweepResult:
    """Run phases 1 and 2; ``stored`` lists the blob store's digests. ``before_batch`` runs before each
    batch of deletions and may raise to stop them (GC's lease check: :mod:`lamina.store.leases`)."""
    cutoff = (time.time() if now is None else now) - grace_seconds
    garbage = gc.collect_garbage(cutoff, delete_untagged=delete_untagged, commit=not dry_run)
    result = SweepResult(untagged=garbage.untagged, links=garbage.links)
    candidates: list[tuple[Digest, int]] = []
    for digest in stored:
        if str(digest) in garbage.live:
            continue
        found = blobs.modified(digest)
        if found is not None and found[1] < cutoff:
            candidates.append((digest, found[0]))
    if dry_run:
        result.blobs = [(str(digest), size) for digest, size in candidates]
        return result
    for start in range(0, len(candidates), batch):
        if before_batch is not None:
            before_batch()
        with gc.sweep_guard() as is_live:
            for digest, _ in candidates[start:start + batch]:
                if is_live(str(digest)):
                    continue
                found = blobs.modified(digest)  # again, under the guard: a fresh upload re-published it
                if found is None or found[1] >= cutoff:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if blobs.remove(digest):
                        result.blobs.append((str(digest), found[0]))
    return result

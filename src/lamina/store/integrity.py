"""Integrity of a root: the database seen whole, verified-blob records, quarantine and fsck's repairs.

Why here: the registry's fsck (:mod:`lamina.registry.fsck`) and verification on read
(:mod:`lamina.registry.verify`) decide *what* to do, this module does it safely next to a serving
registry, through the metadata store's :class:`~lamina.store.roles.Repairs` and
:class:`~lamina.store.roles.VerificationRecords` roles (no SQL here):

- ``Repairs.snapshot`` reads links, references, manifests and tags in one read-only snapshot
  (never blocks a writer, never writes);
- every change (:func:`quarantine_blob`, :func:`quarantine_manifest`, :func:`drop_links`,
  :func:`fix_link_size`, :func:`relink`) runs in one exclusive write transaction whose callback
  re-checks, under the lock pushes and GC take, that the problem still holds, so a push or GC that got
  there first wins and the repair does nothing. A blob is quarantined only if its file is still the one that was hashed
  (same :class:`FileIdentity`): a fresh upload that replaced it in between is never moved away.

Quarantine (``ROOT/quarantine/``): the corrupt file (or a manifest's bytes) moved out of ``blobs/``
(or out of the database), beside ``<name>.json``, a note saying what it was, why it was moved, when,
and which repositories, manifests and tags it affected. Its links go in the same transaction, so the
registry answers ``BLOB_UNKNOWN`` for it and a client pushes it again.

Where the bytes are is a :class:`BlobPlace`: :class:`LocalBlobPlace` (files under the root, this
module) or :class:`lamina.store.s3integrity.S3BlobPlace` (objects in S3, quarantined inside the bucket);
fsck and verification on read call the same five repairs on either.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

from lamina.oci import Digest, parse_digest

from .filesystem import FileIdentity
from .paths import StorePaths
from .private import DIR_MODE, FILE_MODE
from .roles import Repairs, VerificationRecords
from .views import Snapshot

__all__ = [
    "BlobPlace",
    "LocalBlobPlace",
    "Snapshot",
    "drop_links",
    "fix_link_size",
    "forget_stale_checks",
    "is_verified",
    "quarantine_blob",
    "quarantine_file",
    "quarantine_manifest",
    "record_verified",
    "relink",
]


def _quarantine_target(paths: StorePaths, what: str, name: str) -> Path:
    paths.quarantine.mkdir(mode=DIR_MODE, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = paths.quarantine / f"{stamp}-{what}-{name}"
    counter = 1
    while target.exists() or target.with_name(target.name + ".json").exists():
        target = paths.quarantine / f"{stamp}-{what}-{name}.{counter}"
        counter += 1
    return target


def _write_note(target: Path, note: dict[str, Any]) -> None:
    note = {"quarantined_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **note}
    path = target.with_name(target.name + ".json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w") as out:
        json.dump(note, out, indent=2, sort_keys=True)
        out.write("\n")


def _same_file(path: Path, identity: FileIdentity) -> bool:
    try:
        return FileIdentity.of(os.stat(path)) == identity
    except FileNotFoundError:
        return False


def quarantine_blob(
    repairs: Repairs,
    paths: StorePaths,
    digest: Digest,
    identity: FileIdentity,
    reason: str,
    details: dict[str, Any] | None = None,
) -> Path | None:
    """Move the blob file into quarantine and drop every link to it, in one write transaction; None (and
    nothing done) when the file is gone or no longer the one with ``identity`` (replaced since it was hashed)."""
    source = paths.blob(digest)
    moved: list[Path] = []

    def move() -> bool:
        if not _same_file(source, identity):
            return False
        target = _quarantine_target(paths, "blob", f"{digest.algorithm}-{digest.encoded}")
        os.rename(source, target)
        moved.append(target)
        return True

    linked = repairs.drop_blob_links(digest, move)
    if linked is None:
        return None
    note = {"what": "blob", "digest": str(digest), "reason": reason, "original_path": str(source),
            "size": identity.size, "unlinked_from": linked, **(details or {})}
    _write_note(moved[-1], note)
    return moved[-1]


def quarantine_file(paths: StorePaths, path: Path, reason: str) -> Path:
    """Move a stray file (or directory) out of ``blobs/`` into quarantine, with a note."""
    relative = path.relative_to(paths.blobs)
    target = _quarantine_target(paths, "stray", "_".join(relative.parts))
    os.rename(path, target)
    _write_note(target, {"what": "stray", "original_path": str(path), "reason": reason})
    return target


def quarantine_manifest(repairs: Repairs, paths: StorePaths, repository: str, digest: str, reason: str) -> Path | None:
    """Write a manifest whose bytes no longer hash to its digest into quarantine and delete it (its tags
    and references go with it); None when it is gone or now hashes right."""
    algorithm = digest.partition(":")[0]
    written: list[tuple[Path, str, list[str]]] = []

    def keep_aside(content: bytes, tag_names: list[str]) -> bool:
        actual = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
        if actual == digest:
            return False
        target = _quarantine_target(paths, "manifest", f"{repository.replace('/', '_')}-{digest.replace(':', '-')}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        written.append((target, actual, tag_names))
        return True

    if not repairs.remove_manifest(repository, digest, keep_aside):
        return None
    target, actual, tag_names = written[-1]
    _write_note(target, {"what": "manifest", "repository": repository, "digest": digest, "actual": actual,
                         "tags": tag_names, "reason": reason})
    return target


def drop_links(repairs: Repairs, paths: StorePaths, digest: Digest) -> list[str]:
    """Drop every link to a blob whose file is missing (checked under the write lock); the repositories."""
    return repairs.drop_blob_links(digest, lambda: not paths.blob(digest).exists()) or []


def fix_link_size(repairs: Repairs, paths: StorePaths, digest: Digest, identity: FileIdentity) -> int:
    """Set the recorded size of a verified blob's links to its file's size; how many links changed."""
    return repairs.fix_link_size(digest, identity.size, lambda: _same_file(paths.blob(digest), identity))


def relink(repairs: Repairs, paths: StorePaths, repository: str, manifest: str, digest: Digest, size: int) -> bool:
    """Link a blob a manifest of ``repository`` references but the repository lost the link to (its file
    being present and of ``size`` bytes); False when the manifest or the file went meanwhile."""

    def file_has_size() -> bool:
        try:
            return os.stat(paths.blob(digest)).st_size == size
        except FileNotFoundError:
            return False

    return repairs.relink(repository, manifest, digest, size, file_has_size)


# -- verification on read: what was verified, while the file stays the same ---------------------------

def _identity(identity: FileIdentity) -> tuple[int, int, int, int]:
    return identity.inode, identity.size, identity.mtime_ns, identity.ctime_ns


def is_verified(records: VerificationRecords, digest: Digest, identity: FileIdentity) -> bool:
    """Whether this very file (same identity) was re-hashed and matched its digest before."""
    return records.is_verified(digest, _identity(identity))


def record_verified(records: VerificationRecords, digest: Digest, identity: FileIdentity) -> None:
    records.record_verified(digest, _identity(identity))


def forget_stale_checks(records: VerificationRecords, paths: StorePaths) -> int:
    """Drop the verification records of blobs whose file is gone (collected by GC); how many. A file
    published again later has another identity and is re-hashed anyway: this only keeps the table small."""
    return records.forget_checks(lambda digest: not paths.blob(parse_digest(digest)).exists())


# -- where the bytes are: one interface for fsck's and verify's repairs --------------------------------

class BlobPlace(Protocol):
    """The repairs that touch blob bytes, for one kind of blob store; each re-checks its problem inside
    the repair's write transaction (under the exclusive GC gate) and does nothing when it went away.
    Quarantine targets are returned as text (a path, or ``s3://BUCKET/KEY``)."""

    def quarantine_blob(self, repairs: Repairs, digest: Digest, identity: FileIdentity, reason: str,
                        details: dict[str, Any] | None = None) -> str | None: ...
    def drop_links(self, repairs: Repairs, digest: Digest) -> list[str]: ...
    def fix_link_size(self, repairs: Repairs, digest: Digest, identity: FileIdentity) -> int: ...
    def relink(self, repairs: Repairs, repository: str, manifest: str, digest: Digest, size: int) -> bool: ...
    def quarantine_manifest(self, repairs: Repairs, repository: str, digest: str, reason: str) -> str | None: ...
    def forget_stale_checks(self, records: VerificationRecords) -> int: ...


class LocalBlobPlace:
    """Blob files under the root (``blobs/``), quarantined to ``ROOT/quarantine/``."""

    def __init__(self, paths: StorePaths) -> None:
        self.paths = paths

    def quarantine_blob(self, repairs: Repairs, digest: Digest, identity: FileIdentity, reason: str,
                        details: dict[str, Any] | None = None) -> str | None:
        target = quarantine_blob(repairs, self.paths, digest, identity, reason, details)
        return None if target is None else str(target)

    def drop_links(self, repairs: Repairs, digest: Digest) -> list[str]:
        return drop_links(repairs, self.paths, digest)

    def fix_link_size(self, repairs: Repairs, digest: Digest, identity: FileIdentity) -> int:
        return fix_link_size(repairs, self.paths, digest, identity)

    def relink(self, repairs: Repairs, repository: str, manifest: str, digest: Digest, size: int) -> bool:
        return relink(repairs, self.paths, repository, manifest, digest, size)

    def quarantine_manifest(self, repairs: Repairs, repository: str, digest: str, reason: str) -> str | None:
        target = quarantine_manifest(repairs, self.paths, repository, digest, reason)
        return None if target is None else str(target)

    def forget_stale_checks(self, records: VerificationRecords) -> int:
        return forget_stale_checks(records, self.paths)

"""Integrity of a root: the database seen whole, verified-blob records, quarantine and fsck's repairs.

Why here: every statement on the metadata tables lives in ``lamina.store``; the registry's fsck
(:mod:`lamina.registry.fsck`) and verification on read (:mod:`lamina.registry.verify`) decide *what*
to do, this module does it safely next to a serving registry:

- :func:`read_snapshot` reads links, references, manifests and tags in one read transaction of a
  read-only connection (never blocks a writer, never writes);
- every change (:func:`quarantine_blob`, :func:`quarantine_manifest`, :func:`drop_links`,
  :func:`fix_link_size`, :func:`relink`) runs in one ``BEGIN IMMEDIATE`` transaction that re-checks,
  under the write lock, that the problem still holds, so a push or GC that got there first wins and
  the repair does nothing. A blob is quarantined only if its file is still the one that was hashed
  (same :class:`FileIdentity`): a fresh upload that replaced it in between is never moved away.

Quarantine (``ROOT/quarantine/``): the corrupt file (or a manifest's bytes) moved out of ``blobs/``
(or out of the database), beside ``<name>.json``, a note saying what it was, why it was moved, when,
and which repositories, manifests and tags it affected. Its links go in the same transaction, so the
registry answers ``BLOB_UNKNOWN`` for it and a client pushes it again.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lamina.oci import Digest, parse_digest

from .filesystem import FileIdentity
from .paths import StorePaths
from .private import DIR_MODE, FILE_MODE
from .schema import blob_checks, blob_links, manifest_refs, manifests, repositories, tags
from .sweep import compile_sql, connect, immediate

__all__ = [
    "Snapshot",
    "drop_links",
    "fix_link_size",
    "forget_check",
    "forget_stale_checks",
    "is_verified",
    "quarantine_blob",
    "quarantine_file",
    "quarantine_manifest",
    "read_snapshot",
    "record_verified",
    "relink",
]

_REPO_ID = select(repositories.c.id).where(repositories.c.name == bindparam("repository")).scalar_subquery()
LINKS = compile_sql(
    select(repositories.c.name, blob_links.c.digest, blob_links.c.size)
    .join(repositories, repositories.c.id == blob_links.c.repository_id)
)
REFS = compile_sql(
    select(repositories.c.name, manifest_refs.c.manifest_digest, manifest_refs.c.target_digest,
           manifest_refs.c.size, manifest_refs.c.is_manifest)
    .join(repositories, repositories.c.id == manifest_refs.c.repository_id)
)
MANIFESTS = compile_sql(
    select(repositories.c.name, manifests.c.digest, manifests.c.content)
    .join(repositories, repositories.c.id == manifests.c.repository_id)
)
TAGS = compile_sql(select(repositories.c.name, tags.c.digest, tags.c.tag).join(repositories,
                                                                         repositories.c.id == tags.c.repository_id))
LINKED_IN = compile_sql(
    select(repositories.c.name, blob_links.c.size)
    .join(repositories, repositories.c.id == blob_links.c.repository_id)
    .where(blob_links.c.digest == bindparam("digest"))
)
DELETE_LINKS = compile_sql(delete(blob_links).where(blob_links.c.digest == bindparam("digest")))
FIX_SIZE = compile_sql(
    blob_links.update()
    .where(blob_links.c.digest == bindparam("digest"), blob_links.c.size != bindparam("size"))
    .values(size=bindparam("size"))
)
MANIFEST_ROW = compile_sql(
    select(manifests.c.content).where(manifests.c.repository_id == _REPO_ID, manifests.c.digest == bindparam("digest"))
)
MANIFEST_TAGS = compile_sql(
    select(tags.c.tag).where(tags.c.repository_id == _REPO_ID, tags.c.digest == bindparam("digest"))
)
DELETE_MANIFEST = compile_sql(
    delete(manifests).where(manifests.c.repository_id == _REPO_ID, manifests.c.digest == bindparam("digest"))
)
INSERT_LINK = compile_sql(
    sqlite_insert(blob_links)
    .values(repository_id=_REPO_ID, digest=bindparam("digest"), size=bindparam("size"), linked_at=bindparam("now"))
    .on_conflict_do_nothing()
    .inline()  # no RETURNING: rowcount says whether a link was added
)
CHECKED = compile_sql(
    select(blob_checks.c.inode, blob_checks.c.size, blob_checks.c.mtime_ns, blob_checks.c.ctime_ns)
    .where(blob_checks.c.digest == bindparam("digest"))
)
_record = sqlite_insert(blob_checks).values(
    digest=bindparam("digest"), inode=bindparam("inode"), size=bindparam("size"),
    mtime_ns=bindparam("mtime_ns"), ctime_ns=bindparam("ctime_ns"), checked_at=bindparam("now"),
)
RECORD_CHECK = compile_sql(
    _record.on_conflict_do_update(
        index_elements=[blob_checks.c.digest],
        set_={name: _record.excluded[name] for name in ("inode", "size", "mtime_ns", "ctime_ns", "checked_at")},
    )
)
FORGET_CHECK = compile_sql(delete(blob_checks).where(blob_checks.c.digest == bindparam("digest")))
CHECKED_DIGESTS = compile_sql(select(blob_checks.c.digest))


@dataclass
class Snapshot:
    """The database at one instant: what fsck compares the files with."""

    links: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))  # digest -> repo, size
    # (repository, manifest digest, target digest, size, is_manifest)
    refs: list[tuple[str, str, str, int, bool]] = field(default_factory=list)
    manifests: set[tuple[str, str]] = field(default_factory=set)  # (repository, digest)
    corrupt_manifests: list[tuple[str, str, str]] = field(default_factory=list)  # (repository, digest, actual)
    tags: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    database_errors: list[str] = field(default_factory=list)  # PRAGMA quick_check's findings


def _read_only(paths: StorePaths) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{paths.metadata_db}?mode=ro", uri=True, timeout=60, isolation_level=None)


def read_snapshot(paths: StorePaths) -> Snapshot:
    """Links, references, manifests (each re-hashed) and tags in one read transaction, plus SQLite's own
    ``quick_check``. Read-only: safe while the registry serves and writes."""
    snap = Snapshot()
    conn = _read_only(paths)
    try:
        findings = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
        snap.database_errors = [line for line in findings if line != "ok"]
        conn.execute("BEGIN")
        for repository, digest, size in conn.execute(LINKS):
            snap.links[digest].append((repository, int(size)))
        snap.refs = [(r, m, t, int(s), bool(i)) for r, m, t, s, i in conn.execute(REFS)]
        for repository, digest, content in conn.execute(MANIFESTS):
            snap.manifests.add((repository, digest))
            algorithm, _, _ = digest.partition(":")
            actual = f"{algorithm}:{hashlib.new(algorithm, bytes(content)).hexdigest()}"
            if actual != digest:
                snap.corrupt_manifests.append((repository, digest, actual))
        for repository, digest, tag in conn.execute(TAGS):
            snap.tags[(repository, digest)].append(tag)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return snap


@contextlib.contextmanager
def _immediate(paths: StorePaths) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(connect(paths.metadata_db)) as conn, immediate(conn):
        yield conn


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


def quarantine_blob(
    paths: StorePaths, digest: Digest, identity: FileIdentity, reason: str, details: dict[str, Any] | None = None
) -> Path | None:
    """Move the blob file into quarantine and drop every link to it, in one write transaction; None (and
    nothing done) when the file is gone or no longer the one with ``identity`` (replaced since it was hashed)."""
    source = paths.blob(digest)
    with _immediate(paths) as conn:
        try:
            if FileIdentity.of(os.stat(source)) != identity:
                return None
        except FileNotFoundError:
            return None
        linked = sorted(name for name, _ in conn.execute(LINKED_IN, {"digest": str(digest)}))
        conn.execute(DELETE_LINKS, {"digest": str(digest)})
        conn.execute(FORGET_CHECK, {"digest": str(digest)})
        target = _quarantine_target(paths, "blob", f"{digest.algorithm}-{digest.encoded}")
        os.rename(source, target)
    note = {"what": "blob", "digest": str(digest), "reason": reason, "original_path": str(source),
            "size": identity.size, "unlinked_from": linked, **(details or {})}
    _write_note(target, note)
    return target


def quarantine_file(paths: StorePaths, path: Path, reason: str) -> Path:
    """Move a stray file (or directory) out of ``blobs/`` into quarantine, with a note."""
    relative = path.relative_to(paths.blobs)
    target = _quarantine_target(paths, "stray", "_".join(relative.parts))
    os.rename(path, target)
    _write_note(target, {"what": "stray", "original_path": str(path), "reason": reason})
    return target


def quarantine_manifest(paths: StorePaths, repository: str, digest: str, reason: str) -> Path | None:
    """Write a manifest whose bytes no longer hash to its digest into quarantine and delete it (its tags
    and references go with it); None when it is gone or now hashes right."""
    params = {"repository": repository, "digest": digest}
    with _immediate(paths) as conn:
        row = conn.execute(MANIFEST_ROW, params).fetchone()
        if row is None:
            return None
        content = bytes(row[0])
        algorithm = digest.partition(":")[0]
        actual = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
        if actual == digest:
            return None
        tag_names = sorted(tag for (tag,) in conn.execute(MANIFEST_TAGS, params))
        target = _quarantine_target(paths, "manifest", f"{repository.replace('/', '_')}-{digest.replace(':', '-')}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        conn.execute(DELETE_MANIFEST, params)
    _write_note(target, {"what": "manifest", "repository": repository, "digest": digest, "actual": actual,
                         "tags": tag_names, "reason": reason})
    return target


def drop_links(paths: StorePaths, digest: Digest) -> list[str]:
    """Drop every link to a blob whose file is missing (checked under the write lock); the repositories."""
    with _immediate(paths) as conn:
        if paths.blob(digest).exists():
            return []
        linked = sorted(name for name, _ in conn.execute(LINKED_IN, {"digest": str(digest)}))
        conn.execute(DELETE_LINKS, {"digest": str(digest)})
        conn.execute(FORGET_CHECK, {"digest": str(digest)})
    return linked


def fix_link_size(paths: StorePaths, digest: Digest, identity: FileIdentity) -> int:
    """Set the recorded size of a verified blob's links to its file's size; how many links changed."""
    with _immediate(paths) as conn:
        try:
            if FileIdentity.of(os.stat(paths.blob(digest))) != identity:
                return 0
        except FileNotFoundError:
            return 0
        return int(conn.execute(FIX_SIZE, {"digest": str(digest), "size": identity.size}).rowcount)


def relink(paths: StorePaths, repository: str, manifest: str, digest: Digest, size: int) -> bool:
    """Link a blob a manifest of ``repository`` references but the repository lost the link to (its file
    being present and of ``size`` bytes); False when the manifest or the file went meanwhile."""
    with _immediate(paths) as conn:
        if conn.execute(MANIFEST_ROW, {"repository": repository, "digest": manifest}).fetchone() is None:
            return False
        try:
            if os.stat(paths.blob(digest)).st_size != size:
                return False
        except FileNotFoundError:
            return False
        params = {"repository": repository, "digest": str(digest), "size": size, "now": time.time()}
        return int(conn.execute(INSERT_LINK, params).rowcount) > 0


# -- verification on read: what was verified, while the file stays the same ---------------------------

def is_verified(paths: StorePaths, digest: Digest, identity: FileIdentity) -> bool:
    """Whether this very file (same identity) was re-hashed and matched its digest before."""
    conn = _read_only(paths)
    try:
        row = conn.execute(CHECKED, {"digest": str(digest)}).fetchone()
    finally:
        conn.close()
    return row is not None and FileIdentity(*row) == identity


def record_verified(paths: StorePaths, digest: Digest, identity: FileIdentity) -> None:
    with _immediate(paths) as conn:
        conn.execute(RECORD_CHECK, {"digest": str(digest), "inode": identity.inode, "size": identity.size,
                                    "mtime_ns": identity.mtime_ns, "ctime_ns": identity.ctime_ns, "now": time.time()})


def forget_check(paths: StorePaths, digest: Digest) -> None:
    with _immediate(paths) as conn:
        conn.execute(FORGET_CHECK, {"digest": str(digest)})


def forget_stale_checks(paths: StorePaths) -> int:
    """Drop the verification records of blobs whose file is gone (collected by GC); how many. A file
    published again later has another identity and is re-hashed anyway: this only keeps the table small."""
    with _immediate(paths) as conn:
        gone = [digest for (digest,) in conn.execute(CHECKED_DIGESTS)
                if not paths.blob(parse_digest(digest)).exists()]
        for digest in gone:
            conn.execute(FORGET_CHECK, {"digest": digest})
    return len(gone)

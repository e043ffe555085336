"""The storage half of online garbage collection: mark in one snapshot, sweep under the write lock.

Why this protocol is safe while pushes continue (the race the registry must never lose: a manifest PUT
that succeeds while one of its blobs is gone):

1. **Links** (one ``BEGIN IMMEDIATE`` transaction): remove every blob link older than the grace period
   that no manifest *of that repository* references (optionally after deleting untagged manifests).
   ``put_manifest`` checks its references against the links inside its own IMMEDIATE transaction, so
   the two are serialised: a manifest committed first keeps its links; one that comes after finds a
   link gone and fails with MANIFEST_BLOB_UNKNOWN.
2. **Files** (small IMMEDIATE transactions): a blob file is deleted only while holding the database
   write lock, after re-checking that no repository links it and no manifest references it, and only if
   the file is older than the grace period. Creating a link (upload commit, mount) checks the file
   exists inside *its* write transaction (``link_blob(..., present=...)``), so a link can never be
   created for a file a sweep is removing, and an upload re-publishes its file (fresh mtime) even when
   an identical blob exists, so a blob just pushed is never older than the grace period.

Read-only callers (dry runs) run the same statements and roll back. Uses its own connection: the
sweep is rare and must not share a request thread's transaction state.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, bindparam, delete, exists, select, union
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import ClauseElement

from lamina.oci import Digest

from .paths import StorePaths
from .schema import blob_links, manifest_refs, manifests, repositories, tags

__all__ = ["SweepResult", "compile_sql", "connect", "immediate", "sweep"]

_DIALECT = sqlite.dialect(paramstyle="named")


def compile_sql(statement: ClauseElement) -> str:
    """SQLAlchemy Core ``statement`` as SQLite SQL with named parameters (for the sqlite3 DB-API)."""
    return str(statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True}))


_child = manifest_refs.alias("child")
_subject = manifests.alias("subj")
# untagged manifests older than :cutoff that are neither an index's child nor a referrer of a live subject
_UNTAGGED = (
    select(repositories.c.name, manifests.c.digest, manifests.c.size)
    .join(repositories, repositories.c.id == manifests.c.repository_id)
    .where(
        manifests.c.pushed_at < bindparam("cutoff"),
        ~exists().where(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest),
        ~exists().where(
            _child.c.repository_id == manifests.c.repository_id,
            _child.c.target_digest == manifests.c.digest,
            _child.c.is_manifest.is_(True),
        ),
        ~exists().where(
            _subject.c.repository_id == manifests.c.repository_id, _subject.c.digest == manifests.c.subject
        ),
    )
)
UNTAGGED = compile_sql(_UNTAGGED)
DELETE_MANIFEST = compile_sql(
    delete(manifests).where(
        manifests.c.repository_id == select(repositories.c.id).where(repositories.c.name == bindparam("repository"))
        .scalar_subquery(),
        manifests.c.digest == bindparam("digest"),
    )
)
_unreferenced_link = and_(
    blob_links.c.linked_at < bindparam("cutoff"),
    ~exists().where(
        manifest_refs.c.repository_id == blob_links.c.repository_id,
        manifest_refs.c.target_digest == blob_links.c.digest,
    ),
)
STALE_LINKS = compile_sql(
    select(repositories.c.name, blob_links.c.digest, blob_links.c.size)
    .join(repositories, repositories.c.id == blob_links.c.repository_id)
    .where(_unreferenced_link)
)
DELETE_STALE_LINKS = compile_sql(delete(blob_links).where(_unreferenced_link))
LIVE_DIGESTS = compile_sql(
    union(
        select(blob_links.c.digest),
        select(manifest_refs.c.target_digest).where(manifest_refs.c.is_manifest.is_(False)),
    )
)
IS_LIVE = compile_sql(
    select(
        exists().where(blob_links.c.digest == bindparam("digest"))
        | exists().where(manifest_refs.c.target_digest == bindparam("digest"), manifest_refs.c.is_manifest.is_(False))
    )
)


@dataclass
class SweepResult:
    untagged: list[tuple[str, str, int]] = field(default_factory=list)  # (repository, digest, manifest size)
    links: list[tuple[str, str, int]] = field(default_factory=list)  # (repository, digest, size)
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.blobs)


def connect(path: Path, busy_timeout: float = 60.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection, commit: bool = True) -> Iterator[sqlite3.Connection]:
    """A write transaction taken at once (BEGIN IMMEDIATE): rolled back on error, or when not ``commit``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT" if commit else "ROLLBACK")


def _delete_untagged(conn: sqlite3.Connection, cutoff: float) -> list[tuple[str, str, int]]:
    """Untagged manifests, repeatedly (an untagged index's children become untagged orphans)."""
    removed: list[tuple[str, str, int]] = []
    while True:
        rows = conn.execute(UNTAGGED, {"cutoff": cutoff}).fetchall()
        if not rows:
            return removed
        for name, digest, size in rows:
            conn.execute(DELETE_MANIFEST, {"repository": name, "digest": digest})
            removed.append((name, digest, size))


def _blob_files(paths: StorePaths, digests: Iterable[Digest]) -> Iterator[tuple[Digest, os.stat_result]]:
    for digest in digests:
        with contextlib.suppress(FileNotFoundError):
            yield digest, os.stat(paths.blob(digest))


def sweep(
    paths: StorePaths,
    stored: Iterable[Digest],
    *,
    grace_seconds: float,
    delete_untagged: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    batch: int = 64,
) -> SweepResult:
    """Run phases 1 and 2 over the store at ``paths``; ``stored`` lists the blob store's digests."""
    cutoff = (time.time() if now is None else now) - grace_seconds
    result = SweepResult()
    conn = connect(paths.metadata_db)
    try:
        with immediate(conn, commit=not dry_run):
            if delete_untagged:
                result.untagged = _delete_untagged(conn, cutoff)
            result.links = [tuple(row) for row in conn.execute(STALE_LINKS, {"cutoff": cutoff})]  # type: ignore[misc]
            conn.execute(DELETE_STALE_LINKS, {"cutoff": cutoff})
            live = {row[0] for row in conn.execute(LIVE_DIGESTS)}
        candidates = [
            (digest, st) for digest, st in _blob_files(paths, (d for d in stored if str(d) not in live))
            if st.st_mtime < cutoff
        ]
        if dry_run:
            result.blobs = [(str(d), st.st_size) for d, st in candidates]
            return result
        for start in range(0, len(candidates), batch):
            with immediate(conn):
                for digest, _ in candidates[start:start + batch]:
                    if conn.execute(IS_LIVE, {"digest": str(digest)}).fetchone()[0]:
                        continue
                    path = paths.blob(digest)
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:
                        continue
                    if st.st_mtime >= cutoff:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                        result.blobs.append((str(digest), st.st_size))
        return result
    finally:
        conn.close()

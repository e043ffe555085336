"""Registry metadata in SQLite; schema and SQL from SQLAlchemy Core (:mod:`.schema`, :mod:`.queries`).

Why these settings: several worker processes share one database file, so it runs in WAL mode (readers
never block the writer), every connection waits ``busy_timeout`` for the write lock instead of failing, and
every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write transaction can never hit
SQLITE_BUSY halfway (the validation in :meth:`put_manifest` reads, then writes). ``synchronous`` defaults
to FULL (a committed push survives power loss); NORMAL is faster and still never corrupts under WAL, but
the last transactions may roll back after a power cut.

Connections: one sqlite3 connection per thread, opened on first use and kept (autocommit mode; writes
open their own ``BEGIN IMMEDIATE`` transaction). Reads are single statements, atomic on their own, so a
manifest GET or blob-link lookup is one indexed query with no BEGIN and no pool checkout. Statements are
compiled once by SQLAlchemy (:mod:`.queries` says why they are not executed through it).

Fork safety: every connection remembers the process that opened it; in a forked child each thread opens
its own on first use and the parent's are left untouched (never closed by the child), so a store opened
before the server forks its workers is safe in every worker without any call. ``close()`` closes this
process's connections; the next call opens again.

Methods are synchronous and short; a write transaction waits for fsync under FULL, so async callers may
prefer ``asyncio.to_thread`` for writes (the store is thread-safe).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lamina.oci import Digest, parse_digest

from . import queries as q
from .base import (
    BlobReferenced,
    BlobUnknown,
    ManifestRecord,
    ManifestReference,
    MissingReference,
    ReferenceSizeMismatch,
    ReferrerRecord,
    StoreError,
    TagCondition,
    TagImmutable,
    TagPreconditionFailed,
    UploadLimitReached,
    UploadLimits,
    UploadSession,
)
from .schema import SCHEMA_VERSION

__all__ = ["SYNCHRONOUS_MODES", "SqliteMetadataStore", "switch_to_wal"]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def _digest(text: str) -> Digest:
    algorithm, _, encoded = text.partition(":")
    return Digest(algorithm, encoded)  # written by us from a parsed Digest: no need to re-validate


def _limit(limit: int | None) -> int:
    return q.NO_LIMIT if limit is None else max(0, limit)



def switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch ``conn``'s database to WAL. SQLite answers "database is locked" at once, without its busy
    handler, when another process is switching the same fresh file at that moment (several workers
    opening a new root), so retry with backoff for up to ``timeout`` seconds; other errors propagate."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)

class SqliteMetadataStore:
    """The MetadataStore protocol over one SQLite file shared by every worker process."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        pull_granularity: float = 60.0,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"invalid SQLite synchronous mode {synchronous!r}: use one of {SYNCHRONOUS_MODES}")
        self.path = Path(path)
        self.synchronous = mode
        self.busy_timeout = busy_timeout
        # record_pull writes only when the stored time is older than this, so pulls stay read-only.
        self.pull_granularity = pull_granularity
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's connection
        self._epoch = 0  # bumped by close(): connections of an older epoch are reopened
        self._opened: list[tuple[int, sqlite3.Connection]] = []  # (pid, connection), for close()
        self._inherited: list[sqlite3.Connection] = []  # a forked parent's: referenced, never closed

    # -- connections and transactions -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        pid = os.getpid()
        if conn is not None and local.pid == pid and local.epoch == self._epoch:
            return conn
        if conn is not None and local.pid != pid:
            self._inherited.append(conn)
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc
        with self._lock:
            self._opened.append((pid, conn))
        local.conn, local.pid, local.epoch = conn, pid, self._epoch
        return conn

    def close(self) -> None:
        """Close this process's connections; the next call opens the database again."""
        with self._lock:
            self._epoch += 1
            mine = [conn for pid, conn in self._opened if pid == os.getpid()]
            self._opened = [(pid, conn) for pid, conn in self._opened if pid != os.getpid()]
        for conn in mine:
            conn.close()

    def _fetch(self, query: q.Compiled, **values: Any) -> list[Any]:
        """Run one read statement (atomic on its own: no BEGIN needed) and return its rows."""
        try:
            return self._connection().execute(query.sql, query.bind(**values)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    def _fetch_one(self, query: q.Compiled, **values: Any) -> Any:
        rows = self._fetch(query, **values)
        return rows[0] if rows else None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception. IntegrityError passes through."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:  # locked past busy_timeout, disk full, not a database, ...
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    def _run(self, query: q.Compiled, **values: Any) -> int:
        """One write statement in its own transaction; returns the affected row count."""
        with self._transaction() as conn:
            return conn.execute(query.sql, query.bind(**values)).rowcount

    def _enable_wal(self) -> None:
        try:
            switch_to_wal(self._connection(), self.busy_timeout)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    def create_schema(self) -> None:
        """Switch to WAL and create missing tables/indexes; idempotent and safe when processes race."""
        self._enable_wal()
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"metadata database {self.path} has schema version {version}, newer than this lamina "
                    f"({SCHEMA_VERSION}); upgrade lamina"
                )
            for statement in q.TABLE_DDL:
                conn.execute(statement)
            self._migrate(conn)
            for statement in q.INDEX_DDL:
                conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Bring an older database's tables up to :data:`SCHEMA_VERSION` (by their columns, so a
        migration another process finished first is skipped): 1 -> 2 adds ``upload_sessions.user``."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(upload_sessions)")}
        if "user" not in columns:
            conn.execute("ALTER TABLE upload_sessions ADD COLUMN user VARCHAR(255)")

    # -- repositories and blob links --------------------------------------------------------------

    @staticmethod
    def _ensure_repository(conn: sqlite3.Connection, name: str) -> int:
        found = conn.execute(q.REPO_ID.sql, q.REPO_ID.bind(repository=name)).fetchone()
        if found is not None:
            return int(found[0])
        cursor = conn.execute(q.INSERT_REPO.sql, q.INSERT_REPO.bind(repository=name, now=time.time()))
        return int(cursor.lastrowid or 0)

    def link_blob(
        self, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None = None
    ) -> None:
        """Link or re-link; with ``present``, checked under the write lock (GC deletes files under it too)."""
        with self._transaction() as conn:
            self._link(conn, repository, digest, size, present)

    def link_uploaded_blob(
        self, session_id: str, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None = None
    ) -> None:
        """``link_blob`` and ``delete_upload`` in one transaction: a finished push costs one durable commit."""
        with self._transaction() as conn:
            self._link(conn, repository, digest, size, present)
            conn.execute(q.DELETE_UPLOAD.sql, q.DELETE_UPLOAD.bind(upload_id=session_id))

    def _link(
        self, conn: sqlite3.Connection, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None
    ) -> None:
        if present is not None and not present():
            raise BlobUnknown(digest)
        repo_id = self._ensure_repository(conn, repository)
        params = q.LINK_BLOB.bind(repo_id=repo_id, b_digest=str(digest), b_size=size, now=time.time())
        conn.execute(q.LINK_BLOB.sql, params)

    def linked_blob_size(self, repository: str, digest: Digest) -> int | None:
        row = self._fetch_one(q.LINKED_SIZE, repository=repository, digest=str(digest))
        return None if row is None else int(row[0])

    def unlink_blob(self, repository: str, digest: Digest, *, force: bool = False) -> bool:
        """Unlink unless a manifest of the repository names the blob (BlobReferenced): checked under the
        write lock a manifest PUT checks its references under, so neither can slip between the other's
        check and write. ``force`` skips the check (tests simulating lost blobs)."""
        if force:
            return self._run(q.UNLINK_BLOB, repository=repository, digest=str(digest)) > 0
        with self._transaction() as conn:
            query = q.BLOB_REFERENCED_BY
            row = conn.execute(query.sql, query.bind(repository=repository, digest=str(digest))).fetchone()
            if row is not None:
                raise BlobReferenced(repository, digest, _digest(row[0]))
            unlink = q.UNLINK_BLOB.bind(repository=repository, digest=str(digest))
            return conn.execute(q.UNLINK_BLOB.sql, unlink).rowcount > 0

    def repositories_with_blob(self, digest: Digest, limit: int = 1) -> Sequence[str]:
        return [row[0] for row in self._fetch(q.REPOS_WITH_BLOB, digest=str(digest), limit=_limit(limit))]

    def repository_exists(self, repository: str) -> bool:
        return self._fetch_one(q.REPO_ID, repository=repository) is not None

    def list_repositories(self, last: str | None, limit: int | None) -> Sequence[str]:
        """Names after ``last`` in byte order (the catalog's lexical order), at most ``limit``."""
        return [row[0] for row in self._fetch(q.LIST_REPOS, last=last or "", limit=_limit(limit))]

    # -- manifests and tags -----------------------------------------------------------------------

    def put_manifest(
        self,
        record: ManifestRecord,
        references: Sequence[ManifestReference],
        tag: str | None,
        immutable: bool = False,
        condition: TagCondition | None = None,
    ) -> None:
        """Validate references, upsert the manifest and move ``tag``, all in one IMMEDIATE transaction.

        ``immutable``: refuse (TagImmutable) to move ``tag`` if it already names another digest.
        ``condition``: refuse (TagPreconditionFailed) unless it holds for the tag's current digest or the
        tag is already at ``record.digest``. Both are read under the write lock the update then uses.

        A re-PUT of a stored digest keeps its first ``pushed_at``; ``record.tags`` is ignored."""
        wanted = list({(ref.digest, ref.size, ref.is_manifest): ref for ref in references}.values())
        digest = str(record.digest)
        with self._transaction() as conn:
            repo_id = self._ensure_repository(conn, record.repository)
            self._check_references(conn, repo_id, wanted)
            if tag is not None and (immutable or condition is not None):
                found = conn.execute(q.TAG_DIGEST_BY_ID.sql, q.TAG_DIGEST_BY_ID.bind(repo_id=repo_id, b_tag=tag))
                row = found.fetchone()
                current = _digest(row[0]) if row is not None else None
                if condition is not None and current != record.digest and not condition.holds(current):
                    raise TagPreconditionFailed(record.repository, tag, current)
                if immutable and current is not None and current != record.digest:
                    raise TagImmutable(record.repository, tag, current)
            row = q.INSERT_MANIFEST.bind(
                repository_id=repo_id,
                digest=digest,
                media_type=record.media_type,
                content=record.content,
                kind=str(record.kind),
                artifact_type=record.artifact_type,
                subject=str(record.subject) if record.subject is not None else None,
                annotations=record.annotations_json,
                size=len(record.content),
                pushed_at=record.pushed_at,
                last_pulled_at=record.last_pulled_at,
            )
            inserted = conn.execute(q.INSERT_MANIFEST.sql, row).rowcount
            if inserted and wanted:
                refs = [
                    q.INSERT_REF.bind(
                        repository_id=repo_id,
                        manifest_digest=digest,
                        target_digest=str(ref.digest),
                        size=ref.size,
                        is_manifest=ref.is_manifest,
                    )
                    for ref in wanted
                ]
                conn.executemany(q.INSERT_REF.sql, refs)
            if tag is not None:
                params = q.UPSERT_TAG.bind(repo_id=repo_id, b_tag=tag, b_digest=digest, now=record.pushed_at)
                conn.execute(q.UPSERT_TAG.sql, params)

    @staticmethod
    def _check_references(conn: sqlite3.Connection, repo_id: int, wanted: Sequence[ManifestReference]) -> None:
        for ref in sorted(wanted, key=lambda r: (r.is_manifest, r.digest)):
            what, query = ("manifest", q.MANIFEST_SIZE_BY_ID) if ref.is_manifest else ("blob", q.LINKED_SIZE_BY_ID)
            row = conn.execute(query.sql, query.bind(repo_id=repo_id, digest=str(ref.digest))).fetchone()
            if row is None:
                raise MissingReference(ref.digest, what)
            if row[0] != ref.size:
                raise ReferenceSizeMismatch(ref.digest, what, ref.size, row[0])

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """By tag or digest string (anything with ``:`` is a digest; DigestError if malformed)."""
        if ":" in reference:
            row = self._fetch_one(q.MANIFEST_BY_DIGEST, repository=repository, digest=str(parse_digest(reference)))
        else:
            row = self._fetch_one(q.MANIFEST_BY_TAG, repository=repository, tag=reference)
        if row is None:
            return None
        return ManifestRecord(
            repository=repository,
            digest=_digest(row[0]),
            media_type=row[1],
            content=bytes(row[2]),
            kind=row[3],
            artifact_type=row[4],
            subject=_digest(row[5]) if row[5] is not None else None,
            annotations_json=row[6],
            pushed_at=row[7],
            last_pulled_at=row[8],
            tags=tuple(sorted(row[9].split("\n"))) if row[9] else (),
        )

    def delete_manifest(self, repository: str, digest: Digest) -> bool:
        """Remove the manifest, its references and every tag on it (foreign-key cascade)."""
        return self._run(q.DELETE_MANIFEST, repository=repository, digest=str(digest)) > 0

    def delete_tag(self, repository: str, tag: str) -> bool:
        return self._run(q.DELETE_TAG, repository=repository, tag=tag) > 0

    def list_tags(self, repository: str, last: str | None, limit: int | None) -> Sequence[str]:
        """Tags after ``last`` in byte order, at most ``limit`` (the spec's ``n``/``last`` pagination)."""
        rows = self._fetch(q.LIST_TAGS, repository=repository, last=last or "", limit=_limit(limit))
        return [row[0] for row in rows]

    def referrers(
        self,
        repository: str,
        subject: Digest,
        artifact_type: str | None,
        last: Digest | None = None,
        limit: int | None = None,
    ) -> Sequence[ReferrerRecord]:
        """Manifests whose ``subject`` is ``subject``, sorted by digest; filtered by artifact type if given;
        paged: up to ``limit`` of them whose digest sorts after ``last``.

        ``artifact_type`` is compared with the stored record's, which the caller fills as the referrers
        API reports it (the manifest's artifactType, else its config media type)."""
        page = {"after": str(last) if last is not None else "", "limit": _limit(limit)}
        if artifact_type is None:
            rows = self._fetch(q.REFERRERS, repository=repository, subject=str(subject), **page)
        else:
            rows = self._fetch(
                q.REFERRERS_OF_TYPE, repository=repository, subject=str(subject), artifact_type=artifact_type, **page
            )
        return [ReferrerRecord(_digest(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def record_pull(self, repository: str, digest: Digest, when: float) -> None:
        """Remember the pull time; skips the write when the stored time is within ``pull_granularity``."""
        row = self._fetch_one(q.LAST_PULLED, repository=repository, digest=str(digest))
        if row is None or (row[0] is not None and row[0] > when - self.pull_granularity):
            return
        self._run(q.RECORD_PULL, repository=repository, b_digest=str(digest), when=when)

    # -- upload sessions --------------------------------------------------------------------------

    def create_upload(self, session: UploadSession, limits: UploadLimits | None = None) -> None:
        """Insert the session; with ``limits``, count the open ones in the same write transaction."""
        values = {
            "id": session.id,
            "repository": session.repository,
            "size": session.size,
            "started_at": session.started_at,
            "updated_at": session.updated_at,
            "user": session.user,
        }
        try:
            with self._transaction() as conn:
                if limits is not None:
                    self._check_upload_limits(conn, session, limits)
                conn.execute(q.INSERT_UPLOAD.sql, q.INSERT_UPLOAD.bind(**values))
        except sqlite3.IntegrityError:
            raise StoreError(f"upload session {session.id!r} already exists") from None

    @staticmethod
    def _check_upload_limits(conn: sqlite3.Connection, session: UploadSession, limits: UploadLimits) -> None:
        query = q.UPLOADS_OF_REPOSITORY
        count, oldest = conn.execute(
            query.sql, query.bind(repository=session.repository, live_since=limits.live_since)
        ).fetchone()
        if count >= limits.per_repository:
            raise UploadLimitReached("repository", session.repository, limits.per_repository, oldest)
        if session.user is None:
            return
        query = q.UPLOADS_OF_USER
        count, oldest = conn.execute(query.sql, query.bind(user=session.user, live_since=limits.live_since)).fetchone()
        if count >= limits.per_user:
            raise UploadLimitReached("user", session.user, limits.per_user, oldest)

    def get_upload(self, session_id: str) -> UploadSession | None:
        row = self._fetch_one(q.GET_UPLOAD, upload_id=session_id)
        return UploadSession(*row) if row is not None else None

    def update_upload(self, session_id: str, size: int, when: float) -> None:
        self._run(q.UPDATE_UPLOAD, upload_id=session_id, new_size=size, when=when)

    def delete_upload(self, session_id: str) -> None:
        self._run(q.DELETE_UPLOAD, upload_id=session_id)

    def expired_uploads(self, older_than: float) -> Sequence[UploadSession]:
        """Sessions not touched since ``older_than`` (Unix seconds), oldest first."""
        return [UploadSession(*row) for row in self._fetch(q.EXPIRED_UPLOADS, older_than=older_than)]

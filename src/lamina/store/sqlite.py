"""Registry metadata in SQLite, schema and statements in SQLAlchemy Core (:mod:`.schema`, :mod:`.queries`).

Why these settings: several worker processes share one database file, so it runs in WAL mode (readers
never block the writer), every connection waits ``busy_timeout`` for the write lock instead of failing, and
every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write transaction can never hit
SQLITE_BUSY halfway (the validation in :meth:`put_manifest` reads, then writes). ``synchronous`` defaults
to FULL (a committed push survives power loss); NORMAL is faster and still never corrupts under WAL, but
the last transactions may roll back after a power cut.

Writes go through one SQLAlchemy engine per process (pooled connections). Reads are single statements,
compiled once by SQLAlchemy and run by the sqlite3 driver on a per-thread read-only connection in
autocommit mode: a manifest GET or blob-link lookup is one indexed query with no pool checkout and no
BEGIN (5-20x cheaper than SQLAlchemy's execution path on the CI VM; see :mod:`.queries`).

Fork safety: the engine and the read connections are opened lazily and re-opened when the process id
changes, so a store opened before the server forks its workers is safe to use in every worker (the
parent's connections are left untouched in the child); nothing has to be reopened by hand. ``close()``
also works: the next call opens again.

Methods are synchronous and short; a write transaction waits for fsync under FULL, so async callers may
prefer ``asyncio.to_thread`` for writes (the store is thread-safe).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.pool import QueuePool

from lamina.oci import Digest, parse_digest

from . import queries as q
from .base import (
    ManifestRecord,
    ManifestReference,
    MissingReference,
    ReferenceSizeMismatch,
    ReferrerRecord,
    StoreError,
    UploadSession,
)
from .schema import SCHEMA_VERSION, metadata

__all__ = ["SYNCHRONOUS_MODES", "SqliteMetadataStore"]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def _digest(text: str) -> Digest:
    algorithm, _, encoded = text.partition(":")
    return Digest(algorithm, encoded)  # written by us from a parsed Digest: no need to re-validate


def _limit(limit: int | None) -> int:
    return q.NO_LIMIT if limit is None else max(0, limit)


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
        self._pid = -1  # the process that made _engine; another pid means we were forked
        self._engine: Engine | None = None
        self._writer: Engine | None = None
        self._local = threading.local()  # per-thread read connection
        self._epoch = 0  # bumped by close(): read connections of an older epoch are reopened
        self._readers: list[tuple[int, sqlite3.Connection]] = []
        self._inherited: list[sqlite3.Connection] = []

    # -- engine lifecycle -------------------------------------------------------------------------

    def _write_engine(self) -> Engine:
        writer = self._writer
        if writer is None or self._pid != os.getpid():
            with self._lock:
                if self._writer is None or self._pid != os.getpid():
                    if self._engine is not None and self._pid != os.getpid():
                        self._engine.dispose(close=False)  # the parent's connections: leave them to the parent
                    self._engine = self._make_engine()
                    self._writer = self._engine.execution_options(lamina_tx="immediate")
                    self._pid = os.getpid()
                writer = self._writer
        return writer

    def _make_engine(self) -> Engine:
        engine = create_engine(
            f"sqlite+pysqlite:///{self.path}",
            poolclass=QueuePool,
            pool_size=4,
            max_overflow=16,
            connect_args={"check_same_thread": False, "timeout": self.busy_timeout},
        )
        busy_ms = int(self.busy_timeout * 1000)
        synchronous = self.synchronous

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            if connection.get_execution_options().get("lamina_tx") == "immediate":
                connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front (waits busy_timeout)
            else:
                connection.exec_driver_sql("BEGIN")

        return engine

    def close(self) -> None:
        """Close this process's connections; the next call opens the database again."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose(close=self._pid == os.getpid())
            self._engine = self._writer = None
            self._pid = -1
            self._epoch += 1
            mine = [conn for pid, conn in self._readers if pid == os.getpid()]
            self._readers = []
        for conn in mine:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (plain sqlite3, autocommit, query_only), reopened after fork/close."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid() and local.epoch == self._epoch:
            return conn
        if conn is not None and local.pid != os.getpid():
            self._inherited.append(conn)  # the parent's connection: keep it referenced, never close it here
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA query_only = ON")
        with self._lock:
            self._readers.append((os.getpid(), conn))
        local.conn, local.pid, local.epoch = conn, os.getpid(), self._epoch
        return conn

    def _fetch(self, query: q.Compiled, **values: Any) -> list[Any]:
        """Run one read statement (atomic on its own: no BEGIN needed) and return its rows."""
        try:
            return self._reader().execute(query.sql, query.bind(**values)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc}") from exc

    def _fetch_one(self, query: q.Compiled, **values: Any) -> Any:
        rows = self._fetch(query, **values)
        return rows[0] if rows else None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._write_engine().begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except DatabaseError as exc:
            raise StoreError(f"metadata database {self.path}: {exc.orig}") from exc

    def create_schema(self) -> None:
        """Create missing tables and indexes; idempotent and safe when several processes race."""
        with self._write() as conn:
            version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"metadata database {self.path} has schema version {version}, newer than this lamina "
                    f"({SCHEMA_VERSION}); upgrade lamina"
                )
            metadata.create_all(conn)
            if version != SCHEMA_VERSION:
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- repositories and blob links --------------------------------------------------------------

    @staticmethod
    def _ensure_repository(conn: Connection, name: str) -> int:
        found = conn.execute(q.REPO_ID, {"repository": name}).scalar()
        if found is not None:
            return int(found)
        return int(conn.execute(q.INSERT_REPO, {"repository": name, "now": time.time()}).inserted_primary_key[0])

    def link_blob(self, repository: str, digest: Digest, size: int) -> None:
        with self._write() as conn:
            repo_id = self._ensure_repository(conn, repository)
            conn.execute(q.LINK_BLOB, {"repo_id": repo_id, "digest": str(digest), "size": size, "now": time.time()})

    def linked_blob_size(self, repository: str, digest: Digest) -> int | None:
        row = self._fetch_one(q.RAW_LINKED_SIZE, repository=repository, digest=str(digest))
        return None if row is None else int(row[0])

    def unlink_blob(self, repository: str, digest: Digest) -> bool:
        with self._write() as conn:
            return conn.execute(q.UNLINK_BLOB, {"repository": repository, "digest": str(digest)}).rowcount > 0

    def repositories_with_blob(self, digest: Digest, limit: int = 1) -> Sequence[str]:
        return [row[0] for row in self._fetch(q.RAW_REPOS_WITH_BLOB, digest=str(digest), limit=_limit(limit))]

    def repository_exists(self, repository: str) -> bool:
        return self._fetch_one(q.RAW_REPO_ID, repository=repository) is not None

    def list_repositories(self, last: str | None, limit: int | None) -> Sequence[str]:
        """Names after ``last`` in byte order (the catalog's lexical order), at most ``limit``."""
        return [row[0] for row in self._fetch(q.RAW_LIST_REPOS, last=last or "", limit=_limit(limit))]

    # -- manifests and tags -----------------------------------------------------------------------

    def put_manifest(
        self,
        record: ManifestRecord,
        references: Sequence[ManifestReference],
        tag: str | None,
    ) -> None:
        """Validate references, upsert the manifest and move ``tag``, all in one IMMEDIATE transaction.

        A re-PUT of a stored digest keeps its first ``pushed_at``; ``record.tags`` is ignored."""
        wanted = list({(ref.digest, ref.size, ref.is_manifest): ref for ref in references}.values())
        digest = str(record.digest)
        with self._write() as conn:
            repo_id = self._ensure_repository(conn, record.repository)
            self._check_references(conn, repo_id, wanted)
            row = {
                "repository_id": repo_id,
                "digest": digest,
                "media_type": record.media_type,
                "content": record.content,
                "kind": str(record.kind),
                "artifact_type": record.artifact_type,
                "subject": str(record.subject) if record.subject is not None else None,
                "annotations": record.annotations_json,
                "size": len(record.content),
                "pushed_at": record.pushed_at,
                "last_pulled_at": record.last_pulled_at,
            }
            inserted = conn.execute(q.INSERT_MANIFEST, row).rowcount
            if inserted and wanted:
                refs = [
                    {
                        "repository_id": repo_id,
                        "manifest_digest": digest,
                        "target_digest": str(ref.digest),
                        "size": ref.size,
                        "is_manifest": ref.is_manifest,
                    }
                    for ref in wanted
                ]
                conn.execute(q.INSERT_REFS, refs)
            if tag is not None:
                conn.execute(q.UPSERT_TAG, {"repo_id": repo_id, "tag": tag, "digest": digest, "now": record.pushed_at})

    @staticmethod
    def _check_references(conn: Connection, repo_id: int, wanted: Sequence[ManifestReference]) -> None:
        blobs = sorted({str(ref.digest) for ref in wanted if not ref.is_manifest})
        children = sorted({str(ref.digest) for ref in wanted if ref.is_manifest})
        have_blobs: dict[str, int] = {}
        have_children: dict[str, int] = {}
        if blobs:
            rows = conn.execute(q.LINKED_SIZES, {"repo_id": repo_id, "digests": blobs})
            have_blobs = {row[0]: row[1] for row in rows}
        if children:
            rows = conn.execute(q.MANIFEST_SIZES, {"repo_id": repo_id, "digests": children})
            have_children = {row[0]: row[1] for row in rows}
        for ref in sorted(wanted, key=lambda r: (r.is_manifest, r.digest)):
            what, have = ("manifest", have_children) if ref.is_manifest else ("blob", have_blobs)
            actual = have.get(str(ref.digest))
            if actual is None:
                raise MissingReference(ref.digest, what)
            if actual != ref.size:
                raise ReferenceSizeMismatch(ref.digest, what, ref.size, actual)

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """By tag or digest string (anything with ``:`` is a digest; DigestError if malformed)."""
        if ":" in reference:
            row = self._fetch_one(q.RAW_MANIFEST_BY_DIGEST, repository=repository, digest=str(parse_digest(reference)))
        else:
            row = self._fetch_one(q.RAW_MANIFEST_BY_TAG, repository=repository, tag=reference)
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
        with self._write() as conn:
            return conn.execute(q.DELETE_MANIFEST, {"repository": repository, "digest": str(digest)}).rowcount > 0

    def delete_tag(self, repository: str, tag: str) -> bool:
        with self._write() as conn:
            return conn.execute(q.DELETE_TAG, {"repository": repository, "tag": tag}).rowcount > 0

    def list_tags(self, repository: str, last: str | None, limit: int | None) -> Sequence[str]:
        """Tags after ``last`` in byte order, at most ``limit`` (the spec's ``n``/``last`` pagination)."""
        rows = self._fetch(q.RAW_LIST_TAGS, repository=repository, last=last or "", limit=_limit(limit))
        return [row[0] for row in rows]

    def referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> Sequence[ReferrerRecord]:
        """Manifests whose ``subject`` is ``subject``, sorted by digest; filtered by artifact type if given.

        ``artifact_type`` is compared with the stored record's, which the caller fills as the referrers
        API reports it (the manifest's artifactType, else its config media type)."""
        if artifact_type is None:
            rows = self._fetch(q.RAW_REFERRERS, repository=repository, subject=str(subject))
        else:
            rows = self._fetch(
                q.RAW_REFERRERS_OF_TYPE, repository=repository, subject=str(subject), artifact_type=artifact_type
            )
        return [ReferrerRecord(_digest(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def record_pull(self, repository: str, digest: Digest, when: float) -> None:
        """Remember the pull time; skips the write when the stored time is within ``pull_granularity``."""
        row = self._fetch_one(q.RAW_LAST_PULLED, repository=repository, digest=str(digest))
        if row is None or (row[0] is not None and row[0] > when - self.pull_granularity):
            return
        with self._write() as conn:
            conn.execute(q.RECORD_PULL, {"b_digest": str(digest), "when": when, "repository": repository})

    # -- upload sessions --------------------------------------------------------------------------

    def create_upload(self, session: UploadSession) -> None:
        row = {
            "id": session.id,
            "repository": session.repository,
            "size": session.size,
            "started_at": session.started_at,
            "updated_at": session.updated_at,
        }
        try:
            with self._write() as conn:
                conn.execute(q.INSERT_UPLOAD, row)
        except IntegrityError:
            raise StoreError(f"upload session {session.id!r} already exists") from None

    def get_upload(self, session_id: str) -> UploadSession | None:
        row = self._fetch_one(q.RAW_GET_UPLOAD, upload_id=session_id)
        return UploadSession(*row) if row is not None else None

    def update_upload(self, session_id: str, size: int, when: float) -> None:
        with self._write() as conn:
            conn.execute(q.UPDATE_UPLOAD, {"upload_id": session_id, "new_size": size, "when": when})

    def delete_upload(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute(q.DELETE_UPLOAD, {"upload_id": session_id})

    def expired_uploads(self, older_than: float) -> Sequence[UploadSession]:
        """Sessions not touched since ``older_than`` (Unix seconds), oldest first."""
        return [UploadSession(*row) for row in self._fetch(q.RAW_EXPIRED_UPLOADS, older_than=older_than)]

"""Registry metadata in SQLite through SQLAlchemy Core (tables drawn in :mod:`lamina.store.schema`).

Why these settings: several worker processes share one database file, so it runs in WAL mode (readers
never block the writer), every connection waits ``busy_timeout`` for the write lock instead of failing, and
every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write transaction can never hit
SQLITE_BUSY halfway (the validation in :meth:`put_manifest` reads, then writes). ``synchronous`` defaults
to FULL (a committed push survives power loss); NORMAL is faster and still never corrupts under WAL, but
the last transactions may roll back after a power cut.

Fork safety: the engine (and its connection pool) is created lazily on first use and re-created when the
process id changes, so a store opened before the server forks its workers is safe to use in every worker;
nothing has to be reopened by hand (``close()`` also works, and the next call opens again).

Methods are synchronous and short (one indexed statement on the hot paths: manifest by tag or digest,
blob-link lookup); a write transaction waits for fsync under FULL, so async callers may prefer
``asyncio.to_thread`` for writes.
"""

from __future__ import annotations

import os
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
        self._pid = -1
        self._reader: Engine | None = None
        self._writer: Engine | None = None

    # -- engine lifecycle -------------------------------------------------------------------------

    def _engines(self) -> tuple[Engine, Engine]:
        if self._pid != os.getpid() or self._reader is None or self._writer is None:
            with self._lock:
                if self._pid != os.getpid() or self._reader is None or self._writer is None:
                    if self._reader is not None and self._pid != os.getpid():
                        self._reader.dispose(close=False)  # the parent's connections: leave them to the parent
                    engine = self._make_engine()
                    self._reader = engine.execution_options(lamina_tx="autocommit")
                    self._writer = engine.execution_options(lamina_tx="immediate")
                    self._pid = os.getpid()
        return self._reader, self._writer

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
            mode = connection.get_execution_options().get("lamina_tx")
            if mode == "immediate":  # writes: take the write lock up front (waits busy_timeout)
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif mode != "autocommit":  # reads are single statements: atomic without BEGIN
                connection.exec_driver_sql("BEGIN")

        return engine

    def close(self) -> None:
        """Close pooled connections; the next call opens the database again."""
        with self._lock:
            if self._reader is not None:
                self._reader.dispose(close=self._pid == os.getpid())
            self._reader = self._writer = None
            self._pid = -1

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engines()[0].connect() as conn:
                yield conn
        except IntegrityError:
            raise
        except DatabaseError as exc:  # locked past busy_timeout, disk full, not a database, ...
            raise StoreError(f"metadata database {self.path}: {exc.orig}") from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._engines()[1].begin() as conn:
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
        with self._read() as conn:
            return conn.execute(q.LINKED_SIZE, {"repository": repository, "digest": str(digest)}).scalar()

    def unlink_blob(self, repository: str, digest: Digest) -> bool:
        with self._write() as conn:
            return conn.execute(q.UNLINK_BLOB, {"repository": repository, "digest": str(digest)}).rowcount > 0

    def repositories_with_blob(self, digest: Digest, limit: int = 1) -> Sequence[str]:
        with self._read() as conn:
            return list(conn.execute(q.REPOS_WITH_BLOB, {"digest": str(digest), "limit": _limit(limit)}).scalars())

    def repository_exists(self, repository: str) -> bool:
        with self._read() as conn:
            return conn.execute(q.REPO_ID, {"repository": repository}).first() is not None

    def list_repositories(self, last: str | None, limit: int | None) -> Sequence[str]:
        """Names after ``last`` in byte order (the catalog's lexical order), at most ``limit``."""
        with self._read() as conn:
            return list(conn.execute(q.LIST_REPOS, {"last": last or "", "limit": _limit(limit)}).scalars())

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
            query, params = q.MANIFEST_BY_DIGEST, {"repository": repository, "digest": str(parse_digest(reference))}
        else:
            query, params = q.MANIFEST_BY_TAG, {"repository": repository, "tag": reference}
        with self._read() as conn:
            row = conn.execute(query, params).first()
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
        params = {"repository": repository, "last": last or "", "limit": _limit(limit)}
        with self._read() as conn:
            return list(conn.execute(q.LIST_TAGS, params).scalars())

    def referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> Sequence[ReferrerRecord]:
        """Manifests whose ``subject`` is ``subject``, sorted by digest; filtered by artifact type if given.

        ``artifact_type`` is compared with the stored record's, which the caller fills as the referrers
        API reports it (the manifest's artifactType, else its config media type)."""
        params: dict[str, Any] = {"repository": repository, "subject": str(subject)}
        query = q.REFERRERS
        if artifact_type is not None:
            query, params["artifact_type"] = q.REFERRERS_OF_TYPE, artifact_type
        with self._read() as conn:
            return [ReferrerRecord(_digest(r[0]), r[1], r[2], r[3], r[4]) for r in conn.execute(query, params)]

    def record_pull(self, repository: str, digest: Digest, when: float) -> None:
        """Remember the pull time; skips the write when the stored time is within ``pull_granularity``."""
        params = {"repository": repository, "digest": str(digest), "when": when}
        with self._read() as conn:
            row = conn.execute(q.LAST_PULLED, params).first()
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
        with self._read() as conn:
            row = conn.execute(q.GET_UPLOAD, {"upload_id": session_id}).first()
        return UploadSession(*row) if row is not None else None

    def update_upload(self, session_id: str, size: int, when: float) -> None:
        with self._write() as conn:
            conn.execute(q.UPDATE_UPLOAD, {"upload_id": session_id, "new_size": size, "when": when})

    def delete_upload(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute(q.DELETE_UPLOAD, {"upload_id": session_id})

    def expired_uploads(self, older_than: float) -> Sequence[UploadSession]:
        """Sessions not touched since ``older_than`` (Unix seconds), oldest first."""
        with self._read() as conn:
            return [UploadSession(*row) for row in conn.execute(q.EXPIRED_UPLOADS, {"older_than": older_than})]

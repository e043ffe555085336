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

from sqlalchemy import Connection, Engine, and_, create_engine, delete, event, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from lamina.oci import Digest, parse_digest

from .base import (
    ManifestRecord,
    ManifestReference,
    MissingReference,
    ReferenceSizeMismatch,
    ReferrerRecord,
    StoreError,
    UploadSession,
)
from .schema import (
    SCHEMA_VERSION,
    blob_links,
    manifest_refs,
    manifests,
    metadata,
    repositories,
    tags,
    upload_sessions,
)

__all__ = ["SYNCHRONOUS_MODES", "SqliteMetadataStore"]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
_TAG_SEPARATOR = "\n"  # cannot occur in a tag ([A-Za-z0-9_.-])


def _digest(text: str) -> Digest:
    algorithm, _, encoded = text.partition(":")
    return Digest(algorithm, encoded)  # written by us from a parsed Digest: no need to re-validate


def _repo_id(name: str) -> Any:
    return select(repositories.c.id).where(repositories.c.name == name).scalar_subquery()


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
                    self._reader = self._make_engine()
                    self._writer = self._reader.execution_options(lamina_write=True)
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
            write = connection.get_execution_options().get("lamina_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

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
        except OperationalError as exc:
            raise StoreError(f"metadata database {self.path}: {exc.orig}") from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._engines()[1].begin() as conn:
                yield conn
        except OperationalError as exc:
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
        found = conn.execute(select(repositories.c.id).where(repositories.c.name == name)).scalar()
        if found is not None:
            return int(found)
        return int(
            conn.execute(repositories.insert().values(name=name, created_at=time.time())).inserted_primary_key[0]
        )

    def link_blob(self, repository: str, digest: Digest, size: int) -> None:
        with self._write() as conn:
            repo = self._ensure_repository(conn, repository)
            conn.execute(
                sqlite_insert(blob_links)
                .values(repository_id=repo, digest=str(digest), size=size, linked_at=time.time())
                .on_conflict_do_nothing()
            )

    def linked_blob_size(self, repository: str, digest: Digest) -> int | None:
        with self._read() as conn:
            return conn.execute(
                select(blob_links.c.size).where(
                    blob_links.c.repository_id == _repo_id(repository), blob_links.c.digest == str(digest)
                )
            ).scalar()

    def unlink_blob(self, repository: str, digest: Digest) -> bool:
        with self._write() as conn:
            result = conn.execute(
                delete(blob_links).where(
                    blob_links.c.repository_id == _repo_id(repository), blob_links.c.digest == str(digest)
                )
            )
            return result.rowcount > 0

    def repositories_with_blob(self, digest: Digest, limit: int = 1) -> Sequence[str]:
        with self._read() as conn:
            rows = conn.execute(
                select(repositories.c.name)
                .join(blob_links, blob_links.c.repository_id == repositories.c.id)
                .where(blob_links.c.digest == str(digest))
                .order_by(repositories.c.name)
                .limit(limit)
            )
            return [row[0] for row in rows]

    def repository_exists(self, repository: str) -> bool:
        with self._read() as conn:
            return conn.execute(select(repositories.c.id).where(repositories.c.name == repository)).first() is not None

    def list_repositories(self, last: str | None, limit: int | None) -> Sequence[str]:
        query = select(repositories.c.name).order_by(repositories.c.name)
        if last is not None:
            query = query.where(repositories.c.name > last)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [row[0] for row in conn.execute(query)]

    # -- manifests and tags -----------------------------------------------------------------------

    def put_manifest(
        self,
        record: ManifestRecord,
        references: Sequence[ManifestReference],
        tag: str | None,
    ) -> None:
        """Validate references, upsert the manifest and move ``tag``, all in one IMMEDIATE transaction.

        A re-PUT of a stored digest keeps its first ``pushed_at``; ``record.tags`` is ignored."""
        wanted = {(ref.digest, ref.size, ref.is_manifest): ref for ref in references}.values()
        with self._write() as conn:
            repo = self._ensure_repository(conn, record.repository)
            self._check_references(conn, repo, wanted)
            inserted = conn.execute(
                sqlite_insert(manifests)
                .values(
                    repository_id=repo,
                    digest=str(record.digest),
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
                .on_conflict_do_nothing()
            ).rowcount
            if inserted and wanted:
                conn.execute(
                    sqlite_insert(manifest_refs).on_conflict_do_nothing(),
                    [
                        {
                            "repository_id": repo,
                            "manifest_digest": str(record.digest),
                            "target_digest": str(ref.digest),
                            "size": ref.size,
                            "is_manifest": ref.is_manifest,
                        }
                        for ref in wanted
                    ],
                )
            if tag is not None:
                statement = sqlite_insert(tags).values(
                    repository_id=repo, tag=tag, digest=str(record.digest), updated_at=record.pushed_at
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[tags.c.repository_id, tags.c.tag],
                        set_={"digest": statement.excluded.digest, "updated_at": statement.excluded.updated_at},
                    )
                )

    @staticmethod
    def _check_references(conn: Connection, repo: int, wanted: Any) -> None:
        blobs = sorted({str(ref.digest) for ref in wanted if not ref.is_manifest})
        children = sorted({str(ref.digest) for ref in wanted if ref.is_manifest})
        have_blobs: dict[str, int] = {}
        have_children: dict[str, int] = {}
        if blobs:
            rows = conn.execute(
                select(blob_links.c.digest, blob_links.c.size).where(
                    blob_links.c.repository_id == repo, blob_links.c.digest.in_(blobs)
                )
            )
            have_blobs = {row[0]: row[1] for row in rows}
        if children:
            rows = conn.execute(
                select(manifests.c.digest, manifests.c.size).where(
                    manifests.c.repository_id == repo, manifests.c.digest.in_(children)
                )
            )
            have_children = {row[0]: row[1] for row in rows}
        for ref in sorted(wanted, key=lambda r: (r.is_manifest, r.digest)):
            what, have = ("manifest", have_children) if ref.is_manifest else ("blob", have_blobs)
            actual = have.get(str(ref.digest))
            if actual is None:
                raise MissingReference(ref.digest, what)
            if actual != ref.size:
                raise ReferenceSizeMismatch(ref.digest, what, ref.size, actual)

    def _manifest_columns(self) -> list[Any]:
        other = tags.alias("t")
        tag_list = (
            select(func.group_concat(other.c.tag, _TAG_SEPARATOR))
            .where(other.c.repository_id == manifests.c.repository_id, other.c.digest == manifests.c.digest)
            .scalar_subquery()
        )
        return [
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.content,
            manifests.c.kind,
            manifests.c.artifact_type,
            manifests.c.subject,
            manifests.c.annotations,
            manifests.c.pushed_at,
            manifests.c.last_pulled_at,
            tag_list,
        ]

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """By tag or digest string (anything with ``:`` is a digest; DigestError if malformed)."""
        repo = _repo_id(repository)
        if ":" in reference:
            query = select(*self._manifest_columns()).where(
                manifests.c.repository_id == repo, manifests.c.digest == str(parse_digest(reference))
            )
        else:
            query = (
                select(*self._manifest_columns())
                .select_from(
                    tags.join(
                        manifests,
                        and_(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest),
                    )
                )
                .where(tags.c.repository_id == repo, tags.c.tag == reference)
            )
        with self._read() as conn:
            row = conn.execute(query).first()
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
            tags=tuple(sorted(row[9].split(_TAG_SEPARATOR))) if row[9] else (),
        )

    def delete_manifest(self, repository: str, digest: Digest) -> bool:
        """Remove the manifest, its references and every tag on it (foreign-key cascade)."""
        with self._write() as conn:
            result = conn.execute(
                delete(manifests).where(
                    manifests.c.repository_id == _repo_id(repository), manifests.c.digest == str(digest)
                )
            )
            return result.rowcount > 0

    def delete_tag(self, repository: str, tag: str) -> bool:
        with self._write() as conn:
            result = conn.execute(delete(tags).where(tags.c.repository_id == _repo_id(repository), tags.c.tag == tag))
            return result.rowcount > 0

    def list_tags(self, repository: str, last: str | None, limit: int | None) -> Sequence[str]:
        query = select(tags.c.tag).where(tags.c.repository_id == _repo_id(repository)).order_by(tags.c.tag)
        if last is not None:
            query = query.where(tags.c.tag > last)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [row[0] for row in conn.execute(query)]

    def referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> Sequence[ReferrerRecord]:
        """Manifests whose ``subject`` is ``subject``, sorted by digest; filtered by artifact type if given."""
        query = (
            select(
                manifests.c.digest,
                manifests.c.media_type,
                manifests.c.size,
                manifests.c.artifact_type,
                manifests.c.annotations,
            )
            .where(manifests.c.repository_id == _repo_id(repository), manifests.c.subject == str(subject))
            .order_by(manifests.c.digest)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        with self._read() as conn:
            return [ReferrerRecord(_digest(row[0]), row[1], row[2], row[3], row[4]) for row in conn.execute(query)]

    def record_pull(self, repository: str, digest: Digest, when: float) -> None:
        """Remember the pull time; skips the write when the stored time is within ``pull_granularity``."""
        where = (manifests.c.repository_id == _repo_id(repository), manifests.c.digest == str(digest))
        with self._read() as conn:
            row = conn.execute(select(manifests.c.last_pulled_at).where(*where)).first()
        if row is None or (row[0] is not None and row[0] > when - self.pull_granularity):
            return
        with self._write() as conn:
            conn.execute(
                update(manifests)
                .where(*where, (manifests.c.last_pulled_at.is_(None)) | (manifests.c.last_pulled_at < when))
                .values(last_pulled_at=when)
            )

    # -- upload sessions --------------------------------------------------------------------------

    def create_upload(self, session: UploadSession) -> None:
        with self._write() as conn:
            conn.execute(
                upload_sessions.insert().values(
                    id=session.id,
                    repository=session.repository,
                    size=session.size,
                    started_at=session.started_at,
                    updated_at=session.updated_at,
                )
            )

    def get_upload(self, session_id: str) -> UploadSession | None:
        with self._read() as conn:
            row = conn.execute(select(upload_sessions).where(upload_sessions.c.id == session_id)).first()
        return UploadSession(*row) if row is not None else None

    def update_upload(self, session_id: str, size: int, when: float) -> None:
        with self._write() as conn:
            conn.execute(
                update(upload_sessions).where(upload_sessions.c.id == session_id).values(size=size, updated_at=when)
            )

    def delete_upload(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(upload_sessions).where(upload_sessions.c.id == session_id))

    def expired_uploads(self, older_than: float) -> Sequence[UploadSession]:
        """Sessions not touched since ``older_than`` (Unix seconds), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(upload_sessions)
                .where(upload_sessions.c.updated_at < older_than)
                .order_by(upload_sessions.c.updated_at, upload_sessions.c.id)
            )
            return [UploadSession(*row) for row in rows]

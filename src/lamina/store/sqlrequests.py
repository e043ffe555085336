"""The request-path roles (blob links, repositories, manifests and tags, referrers, upload sessions) over
any SQL backend's primitives (:mod:`.sqlcore`).

The guarantees of :mod:`lamina.store.base` and how each is kept on both backends:

- a manifest PUT checks its references inside the transaction that stores it, holding the ``shared``
  GC gate (garbage collection's link removal takes it ``exclusive``) and a ``FOR SHARE`` lock on each
  link and child manifest it found (an unlink or delete of one waits for the PUT and then sees it);
- a tag moves under a per-tag lock, and its current digest is read ``FOR UPDATE`` under it, so an
  immutable tag or an ``If-Match`` condition is checked against the digest the move replaces: of two
  writers conditioned on the same digest only one wins;
- an unlink locks the link ``FOR UPDATE`` before looking for manifests that use the blob;
- creating an upload session under limits counts and inserts under per-repository and per-user locks.

On SQLite every one of those locks is implied by ``BEGIN IMMEDIATE`` (one writer at a time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lamina.oci import Digest, parse_digest

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
from .sqlcore import SqlCore, digest_of

__all__ = ["RequestQueries"]


class RequestQueries(SqlCore):
    """BlobLinks, Repositories, ManifestsAndTags, Referrers and UploadSessions (:mod:`.roles`)."""

    # -- repositories and blob links --------------------------------------------------------------

    def _ensure_repository(self, conn: Any, name: str) -> int:
        found = self._exec(conn, self.sql.repo_id, repository=name).fetchone()
        if found is not None:
            return int(found[0])
        inserted = self._exec(conn, self.sql.insert_repo, repository=name, now=time.time()).fetchone()
        if inserted is not None:
            return int(inserted[0])
        # inserted by a concurrent transaction that committed meanwhile (PostgreSQL's ON CONFLICT waited)
        return int(self._exec(conn, self.sql.repo_id, repository=name).fetchone()[0])

    def link_blob(
        self, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None = None
    ) -> None:
        """Link or re-link; with ``present``, checked under the GC gate (GC deletes files under it too)."""
        self._write(lambda conn: self._link(conn, repository, digest, size, present),
                    gate="shared" if present is not None else None)

    def link_uploaded_blob(
        self, session_id: str, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None = None
    ) -> None:
        """``link_blob`` and ``delete_upload`` in one transaction: a finished push costs one durable commit."""

        def run(conn: Any) -> None:
            self._link(conn, repository, digest, size, present)
            self._exec(conn, self.sql.delete_upload, upload_id=session_id)

        self._write(run, gate="shared" if present is not None else None)

    def _link(self, conn: Any, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None) -> None:
        if present is not None and not present():
            raise BlobUnknown(digest)
        repo_id = self._ensure_repository(conn, repository)
        self._exec(conn, self.sql.link_blob, repo_id=repo_id, b_digest=str(digest), b_size=size, now=time.time())

    def linked_blob_size(self, repository: str, digest: Digest) -> int | None:
        row = self._fetch_one(self.sql.linked_size, repository=repository, digest=str(digest))
        return None if row is None else int(row[0])

    def unlink_blob(self, repository: str, digest: Digest, *, force: bool = False) -> bool:
        """Unlink unless a manifest of the repository names the blob (BlobReferenced). The link is locked
        first, so a manifest PUT that checked it either committed (its references are seen here) or
        waits and then finds it gone. ``force`` skips the check (tests simulating lost blobs)."""
        params = {"repository": repository, "digest": str(digest)}

        def run(conn: Any) -> bool:
            if not force:
                if self._exec(conn, self.sql.lock_link, **params).fetchone() is None:
                    return False
                row = self._exec(conn, self.sql.blob_referenced_by, **params).fetchone()
                if row is not None:
                    raise BlobReferenced(repository, digest, digest_of(row[0]))
            return int(self._exec(conn, self.sql.unlink_blob, **params).rowcount) > 0

        return self._write(run)

    def repositories_with_blob(self, digest: Digest, limit: int = 1) -> Sequence[str]:
        rows = self._fetch(self.sql.repos_with_blob, digest=str(digest), limit=self._limit(limit))
        return [row[0] for row in rows]

    def repository_exists(self, repository: str) -> bool:
        return self._fetch_one(self.sql.repo_id, repository=repository) is not None

    def list_repositories(self, last: str | None, limit: int | None) -> Sequence[str]:
        """Names after ``last`` in byte order (the catalog's lexical order), at most ``limit``."""
        return [row[0] for row in self._fetch(self.sql.list_repos, last=last or "", limit=self._limit(limit))]

    # -- manifests and tags -----------------------------------------------------------------------

    def put_manifest(
        self,
        record: ManifestRecord,
        references: Sequence[ManifestReference],
        tag: str | None,
        immutable: bool = False,
        condition: TagCondition | None = None,
    ) -> None:
        """Validate references, upsert the manifest and move ``tag``, all in one transaction.

        ``immutable``: refuse (TagImmutable) to move ``tag`` if it already names another digest.
        ``condition``: refuse (TagPreconditionFailed) unless it holds for the tag's current digest or the
        tag is already at ``record.digest``. Both are read under the tag's lock, which the move then uses.

        A re-PUT of a stored digest keeps its first ``pushed_at``; ``record.tags`` is ignored."""
        wanted = list({(ref.digest, ref.size, ref.is_manifest): ref for ref in references}.values())
        keys = (f"tag\0{record.repository}\0{tag}",) if tag is not None else ()
        self._write(lambda conn: self._put_manifest(conn, record, wanted, tag, immutable, condition),
                    gate="shared", keys=keys)

    def _put_manifest(
        self,
        conn: Any,
        record: ManifestRecord,
        wanted: Sequence[ManifestReference],
        tag: str | None,
        immutable: bool,
        condition: TagCondition | None,
    ) -> None:
        sql, digest = self.sql, str(record.digest)
        repo_id = self._ensure_repository(conn, record.repository)
        self._check_references(conn, repo_id, wanted)
        if tag is not None and (immutable or condition is not None):
            row = self._exec(conn, sql.tag_digest_by_id, repo_id=repo_id, b_tag=tag).fetchone()
            current = digest_of(row[0]) if row is not None else None
            if condition is not None and current != record.digest and not condition.holds(current):
                raise TagPreconditionFailed(record.repository, tag, current)
            if immutable and current is not None and current != record.digest:
                raise TagImmutable(record.repository, tag, current)
        inserted = self._exec(
            conn,
            sql.insert_manifest,
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
        ).rowcount
        if inserted and wanted:
            refs = [
                sql.insert_ref.bind(repository_id=repo_id, manifest_digest=digest, target_digest=str(ref.digest),
                                    size=ref.size, is_manifest=ref.is_manifest)
                for ref in wanted
            ]
            self._exec_many(conn, sql.insert_ref, refs)
        if tag is not None:
            self._exec(conn, sql.upsert_tag, repo_id=repo_id, b_tag=tag, b_digest=digest, now=record.pushed_at)

    def _check_references(self, conn: Any, repo_id: int, wanted: Sequence[ManifestReference]) -> None:
        for ref in sorted(wanted, key=lambda r: (r.is_manifest, r.digest)):  # one lock order for every PUT
            what, query = ("manifest", self.sql.manifest_size_by_id) if ref.is_manifest else (
                "blob", self.sql.linked_size_by_id)
            row = self._exec(conn, query, repo_id=repo_id, digest=str(ref.digest)).fetchone()
            if row is None:
                raise MissingReference(ref.digest, what)
            if row[0] != ref.size:
                raise ReferenceSizeMismatch(ref.digest, what, ref.size, row[0])

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """By tag or digest string (anything with ``:`` is a digest; DigestError if malformed)."""
        if ":" in reference:
            row = self._fetch_one(self.sql.manifest_by_digest, repository=repository,
                                  digest=str(parse_digest(reference)))
        else:
            row = self._fetch_one(self.sql.manifest_by_tag, repository=repository, tag=reference)
        if row is None:
            return None
        return ManifestRecord(
            repository=repository,
            digest=digest_of(row[0]),
            media_type=row[1],
            content=bytes(row[2]),
            kind=row[3],
            artifact_type=row[4],
            subject=digest_of(row[5]) if row[5] is not None else None,
            annotations_json=row[6],
            pushed_at=row[7],
            last_pulled_at=row[8],
            tags=tuple(sorted(row[9].split("\n"))) if row[9] else (),
        )

    def delete_manifest(self, repository: str, digest: Digest) -> bool:
        """Remove the manifest, its references and every tag on it (foreign-key cascade)."""
        query = self.sql.delete_manifest
        return self._write(lambda conn: self._exec(conn, query, repository=repository, digest=str(digest)).rowcount) > 0

    def delete_tag(self, repository: str, tag: str) -> bool:
        query = self.sql.delete_tag
        deleted = self._write(lambda conn: self._exec(conn, query, repository=repository, tag=tag).rowcount,
                              keys=(f"tag\0{repository}\0{tag}",))
        return int(deleted) > 0

    def list_tags(self, repository: str, last: str | None, limit: int | None) -> Sequence[str]:
        """Tags after ``last`` in byte order, at most ``limit`` (the spec's ``n``/``last`` pagination)."""
        rows = self._fetch(self.sql.list_tags, repository=repository, last=last or "", limit=self._limit(limit))
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
        page = {"after": str(last) if last is not None else "", "limit": self._limit(limit)}
        if artifact_type is None:
            rows = self._fetch(self.sql.referrers, repository=repository, subject=str(subject), **page)
        else:
            rows = self._fetch(self.sql.referrers_of_type, repository=repository, subject=str(subject),
                               artifact_type=artifact_type, **page)
        return [ReferrerRecord(digest_of(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def record_pull(self, repository: str, digest: Digest, when: float) -> None:
        """Remember the pull time; skips the write when the stored time is within ``pull_granularity``."""
        row = self._fetch_one(self.sql.last_pulled, repository=repository, digest=str(digest))
        if row is None or (row[0] is not None and row[0] > when - self.pull_granularity):
            return
        query = self.sql.record_pull
        self._write(lambda conn: self._exec(conn, query, repository=repository, b_digest=str(digest), when=when))

    # -- upload sessions --------------------------------------------------------------------------

    def create_upload(self, session: UploadSession, limits: UploadLimits | None = None) -> None:
        """Insert the session; with ``limits``, count the open ones under the same locks."""
        values = {"id": session.id, "repository": session.repository, "size": session.size,
                  "started_at": session.started_at, "updated_at": session.updated_at, "user": session.user}

        def run(conn: Any) -> None:
            if limits is not None:
                self._check_upload_limits(conn, session, limits)
            self._exec(conn, self.sql.insert_upload, **values)

        keys: tuple[str, ...] = ()
        if limits is not None:
            keys = (f"uploads\0{session.repository}",)
            keys += (f"uploads-of\0{session.user}",) if session.user is not None else ()
        try:
            self._write(run, keys=keys)
        except self.integrity_errors:
            raise StoreError(f"upload session {session.id!r} already exists") from None

    def _check_upload_limits(self, conn: Any, session: UploadSession, limits: UploadLimits) -> None:
        count, oldest = self._exec(conn, self.sql.uploads_of_repository, repository=session.repository,
                                   live_since=limits.live_since).fetchone()
        if count >= limits.per_repository:
            raise UploadLimitReached("repository", session.repository, limits.per_repository, oldest)
        if session.user is None:
            return
        count, oldest = self._exec(conn, self.sql.uploads_of_user, user=session.user,
                                   live_since=limits.live_since).fetchone()
        if count >= limits.per_user:
            raise UploadLimitReached("user", session.user, limits.per_user, oldest)

    def get_upload(self, session_id: str) -> UploadSession | None:
        row = self._fetch_one(self.sql.get_upload, upload_id=session_id)
        return UploadSession(*row) if row is not None else None

    def update_upload(self, session_id: str, size: int, when: float) -> None:
        query = self.sql.update_upload
        self._write(lambda conn: self._exec(conn, query, upload_id=session_id, new_size=size, when=when))

    def delete_upload(self, session_id: str) -> None:
        query = self.sql.delete_upload
        self._write(lambda conn: self._exec(conn, query, upload_id=session_id))

    def expired_uploads(self, older_than: float) -> Sequence[UploadSession]:
        """Sessions not touched since ``older_than`` (Unix seconds), oldest first."""
        return [UploadSession(*row) for row in self._fetch(self.sql.expired_uploads, older_than=older_than)]

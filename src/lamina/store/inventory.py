"""Read-only views of what a registry holds, for the web console and lifecycle rules, plus the one
conditional delete lifecycle needs.

Why a separate module: these are whole-repository scans (every manifest with its tags and
references), which the request path never needs; they run on their own read-only connection so a
long listing never holds a request thread's connection. A repository's bytes count each distinct blob
its manifests reference once, plus the manifests themselves.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, exists, func, literal_column, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import ClauseElement

from .paths import StorePaths
from .schema import blob_links, manifest_refs, manifests, repositories, tags, upload_sessions
from .sweep import connect

__all__ = ["ManifestInfo", "RepositoryInfo", "delete_manifest_if_unchanged", "list_manifests", "list_repositories"]

_DIALECT = sqlite.dialect(paramstyle="named")


def _sql(statement: ClauseElement) -> str:
    return str(statement.compile(dialect=_DIALECT))


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
    name: str
    manifests: int
    tags: int
    bytes: int
    last_push: float | None


_REPO_ID = select(repositories.c.id).where(repositories.c.name == bindparam("repository")).scalar_subquery()
MANIFESTS = _sql(
    select(
        manifests.c.digest, manifests.c.media_type, manifests.c.kind, manifests.c.artifact_type,
        manifests.c.subject, manifests.c.size, manifests.c.pushed_at, manifests.c.last_pulled_at,
    ).where(manifests.c.repository_id == _REPO_ID)
)
TAGS = _sql(select(tags.c.digest, tags.c.tag).where(tags.c.repository_id == _REPO_ID))
REFS = _sql(
    select(manifest_refs.c.manifest_digest, manifest_refs.c.target_digest, manifest_refs.c.size,
           manifest_refs.c.is_manifest).where(manifest_refs.c.repository_id == _REPO_ID)
)
REPOS = _sql(
    select(
        repositories.c.name,
        select(func.count()).where(manifests.c.repository_id == repositories.c.id).scalar_subquery(),
        select(func.count()).where(tags.c.repository_id == repositories.c.id).scalar_subquery(),
        select(func.max(manifests.c.pushed_at)).where(manifests.c.repository_id == repositories.c.id)
        .scalar_subquery(),
        select(func.coalesce(func.sum(manifests.c.size), literal_column("0")))
        .where(manifests.c.repository_id == repositories.c.id)
        .scalar_subquery(),
    ).order_by(repositories.c.name)
)
_distinct_refs = (
    select(manifest_refs.c.repository_id, manifest_refs.c.target_digest, func.max(manifest_refs.c.size).label("size"))
    .where(manifest_refs.c.is_manifest.is_(False))
    .group_by(manifest_refs.c.repository_id, manifest_refs.c.target_digest)
    .subquery()
)
REPO_BLOB_BYTES = _sql(
    select(_distinct_refs.c.repository_id, func.sum(_distinct_refs.c.size), repositories.c.name)
    .join(repositories, repositories.c.id == _distinct_refs.c.repository_id)
    .group_by(_distinct_refs.c.repository_id)
)
_child = manifest_refs.alias("child")
DELETE_IF_UNCHANGED = _sql(
    delete(manifests).where(
        manifests.c.repository_id == _REPO_ID,
        manifests.c.digest == bindparam("digest"),
        ~exists().where(
            _child.c.repository_id == manifests.c.repository_id,
            _child.c.target_digest == manifests.c.digest,
            _child.c.is_manifest.is_(True),
        ),
    )
)


def _read(paths: StorePaths) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{paths.metadata_db}?mode=ro", uri=True, timeout=30)


def list_repositories(paths: StorePaths) -> list[RepositoryInfo]:
    conn = _read(paths)
    try:
        conn.execute("BEGIN")  # one snapshot for both statements
        blob_bytes = {row[2]: int(row[1] or 0) for row in conn.execute(REPO_BLOB_BYTES)}
        rows = conn.execute(REPOS).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    return [
        RepositoryInfo(name, int(count), int(tag_count), int(manifest_bytes) + blob_bytes.get(name, 0), last)
        for name, count, tag_count, last, manifest_bytes in rows
    ]


def list_manifests(paths: StorePaths, repository: str) -> list[ManifestInfo]:
    """Every manifest of ``repository`` with its tags and references, newest push first."""
    conn = _read(paths)
    try:
        conn.execute("BEGIN")
        params = {"repository": repository}
        rows = conn.execute(MANIFESTS, params).fetchall()
        tag_map: dict[str, list[str]] = defaultdict(list)
        for digest, tag in conn.execute(TAGS, params):
            tag_map[digest].append(tag)
        ref_map: dict[str, list[Reference]] = defaultdict(list)
        for manifest, target, size, is_manifest in conn.execute(REFS, params):
            ref_map[manifest].append(Reference(target, int(size), bool(is_manifest)))
        conn.execute("COMMIT")
    finally:
        conn.close()
    infos = [
        ManifestInfo(repository, digest, media_type, kind, artifact_type, subject, int(size), pushed, pulled,
                     tuple(sorted(tag_map.get(digest, ()))), tuple(ref_map.get(digest, ())))
        for digest, media_type, kind, artifact_type, subject, size, pushed, pulled in rows
    ]
    return sorted(infos, key=lambda m: (-m.pushed_at, m.digest))


def repository_bytes(infos: Sequence[ManifestInfo]) -> int:
    blobs: dict[str, int] = {}
    for info in infos:
        for ref in info.references:
            if not ref.is_manifest:
                blobs[ref.digest] = ref.size
    return sum(blobs.values()) + sum(info.size for info in infos)


def delete_manifest_if_unchanged(paths: StorePaths, repository: str, digest: str, expected_tags: Sequence[str]) -> bool:
    """Delete the manifest if its tags are still ``expected_tags`` and no index lists it (one transaction)."""
    conn = connect(paths.metadata_db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = sorted(tag for d, tag in conn.execute(TAGS, {"repository": repository}) if d == digest)
            deleted = 0
            if current == sorted(expected_tags):
                deleted = conn.execute(DELETE_IF_UNCHANGED, {"repository": repository, "digest": digest}).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return deleted > 0
    finally:
        conn.close()


_distinct_blobs = (
    select(blob_links.c.digest, func.max(blob_links.c.size).label("size")).group_by(blob_links.c.digest).subquery()
)
TOTALS = _sql(
    select(
        select(func.count()).select_from(_distinct_blobs).scalar_subquery(),
        select(func.coalesce(func.sum(_distinct_blobs.c.size), literal_column("0"))).scalar_subquery(),
        select(func.count()).select_from(repositories).scalar_subquery(),
        select(func.count()).select_from(manifests).scalar_subquery(),
        select(func.count()).select_from(upload_sessions).scalar_subquery(),
    )
)


def storage_totals(paths: StorePaths) -> dict[str, int]:
    """Registry-wide counts for ``/metrics``: distinct linked blobs and their bytes, repositories, ..."""
    conn = _read(paths)
    try:
        blobs, size, repos, manifest_count, uploads = conn.execute(TOTALS).fetchone()
    finally:
        conn.close()
    return {
        "storage_blobs": int(blobs),
        "storage_bytes": int(size),
        "repositories": int(repos),
        "manifests": int(manifest_count),
        "upload_sessions_open": int(uploads),
    }

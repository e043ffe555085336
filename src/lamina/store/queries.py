"""Every statement the SQLite metadata store runs, built once at import with named bind parameters.

Why: building a SQLAlchemy Core statement per call costs more than running it (measured: ~1.8 ms vs
~0.2 ms for a manifest GET on the CI machine). Prebuilt statements hit SQLAlchemy's compiled cache, so a
call is bind + execute. Repositories are addressed by name through the ``REPO`` subquery, so each hot
path (manifest by tag, by digest, blob-link lookup) stays one indexed statement. The ``:param`` names are
the keys callers pass.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .schema import blob_links, manifest_refs, manifests, repositories, tags, upload_sessions

# :repository -> repositories.id (NULL when unknown, which matches nothing)
REPO = select(repositories.c.id).where(repositories.c.name == bindparam("repository")).scalar_subquery()
NO_LIMIT = -1  # SQLite's LIMIT -1 means "all rows"

# -- repositories and blob links -----------------------------------------------------------------
REPO_ID = select(repositories.c.id).where(repositories.c.name == bindparam("repository"))
INSERT_REPO = sqlite_insert(repositories).values(name=bindparam("repository"), created_at=bindparam("now"))
LINK_BLOB = (
    sqlite_insert(blob_links)
    .values(
        repository_id=bindparam("repo_id"),
        digest=bindparam("digest"),
        size=bindparam("size"),
        linked_at=bindparam("now"),
    )
    .on_conflict_do_nothing()
)
LINKED_SIZE = select(blob_links.c.size).where(
    blob_links.c.repository_id == REPO, blob_links.c.digest == bindparam("digest")
)
UNLINK_BLOB = delete(blob_links).where(blob_links.c.repository_id == REPO, blob_links.c.digest == bindparam("digest"))
REPOS_WITH_BLOB = (
    select(repositories.c.name)
    .join(blob_links, blob_links.c.repository_id == repositories.c.id)
    .where(blob_links.c.digest == bindparam("digest"))
    .order_by(repositories.c.name)
    .limit(bindparam("limit"))
)
LIST_REPOS = (
    select(repositories.c.name)
    .where(repositories.c.name > bindparam("last"))
    .order_by(repositories.c.name)
    .limit(bindparam("limit"))
)

# -- manifests --------------------------------------------------------------------------------------
LINKED_SIZES = select(blob_links.c.digest, blob_links.c.size).where(
    blob_links.c.repository_id == bindparam("repo_id"), blob_links.c.digest.in_(bindparam("digests", expanding=True))
)
MANIFEST_SIZES = select(manifests.c.digest, manifests.c.size).where(
    manifests.c.repository_id == bindparam("repo_id"), manifests.c.digest.in_(bindparam("digests", expanding=True))
)
INSERT_MANIFEST = sqlite_insert(manifests).on_conflict_do_nothing()
INSERT_REFS = sqlite_insert(manifest_refs).on_conflict_do_nothing()
_upsert_tag = sqlite_insert(tags).values(
    repository_id=bindparam("repo_id"), tag=bindparam("tag"), digest=bindparam("digest"), updated_at=bindparam("now")
)
UPSERT_TAG = _upsert_tag.on_conflict_do_update(
    index_elements=[tags.c.repository_id, tags.c.tag],
    set_={"digest": _upsert_tag.excluded.digest, "updated_at": _upsert_tag.excluded.updated_at},
)

_other = tags.alias("t")
_TAGS_OF_MANIFEST = (
    select(func.group_concat(_other.c.tag, "\n"))
    .where(_other.c.repository_id == manifests.c.repository_id, _other.c.digest == manifests.c.digest)
    .scalar_subquery()
)
MANIFEST_COLUMNS = (
    manifests.c.digest,
    manifests.c.media_type,
    manifests.c.content,
    manifests.c.kind,
    manifests.c.artifact_type,
    manifests.c.subject,
    manifests.c.annotations,
    manifests.c.pushed_at,
    manifests.c.last_pulled_at,
    _TAGS_OF_MANIFEST,
)
MANIFEST_BY_DIGEST = select(*MANIFEST_COLUMNS).where(
    manifests.c.repository_id == REPO, manifests.c.digest == bindparam("digest")
)
MANIFEST_BY_TAG = (
    select(*MANIFEST_COLUMNS)
    .select_from(
        tags.join(
            manifests, and_(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest)
        )
    )
    .where(tags.c.repository_id == REPO, tags.c.tag == bindparam("tag"))
)
DELETE_MANIFEST = delete(manifests).where(manifests.c.repository_id == REPO, manifests.c.digest == bindparam("digest"))
DELETE_TAG = delete(tags).where(tags.c.repository_id == REPO, tags.c.tag == bindparam("tag"))
LIST_TAGS = (
    select(tags.c.tag)
    .where(tags.c.repository_id == REPO, tags.c.tag > bindparam("last"))
    .order_by(tags.c.tag)
    .limit(bindparam("limit"))
)
_REFERRER_COLUMNS = (
    manifests.c.digest,
    manifests.c.media_type,
    manifests.c.size,
    manifests.c.artifact_type,
    manifests.c.annotations,
)
REFERRERS = (
    select(*_REFERRER_COLUMNS)
    .where(manifests.c.repository_id == REPO, manifests.c.subject == bindparam("subject"))
    .order_by(manifests.c.digest)
)
REFERRERS_OF_TYPE = REFERRERS.where(manifests.c.artifact_type == bindparam("artifact_type"))
LAST_PULLED = select(manifests.c.last_pulled_at).where(
    manifests.c.repository_id == REPO, manifests.c.digest == bindparam("digest")
)
RECORD_PULL = (
    update(manifests)
    .where(
        manifests.c.repository_id == REPO,
        manifests.c.digest == bindparam("b_digest"),
        or_(manifests.c.last_pulled_at.is_(None), manifests.c.last_pulled_at < bindparam("when")),
    )
    .values(last_pulled_at=bindparam("when"))
)

# -- upload sessions ----------------------------------------------------------------------------------
INSERT_UPLOAD = upload_sessions.insert()
GET_UPLOAD = select(upload_sessions).where(upload_sessions.c.id == bindparam("upload_id"))
UPDATE_UPLOAD = (
    update(upload_sessions)
    .where(upload_sessions.c.id == bindparam("upload_id"))
    .values(size=bindparam("new_size"), updated_at=bindparam("when"))
)
DELETE_UPLOAD = delete(upload_sessions).where(upload_sessions.c.id == bindparam("upload_id"))
EXPIRED_UPLOADS = (
    select(upload_sessions)
    .where(upload_sessions.c.updated_at < bindparam("older_than"))
    .order_by(upload_sessions.c.updated_at, upload_sessions.c.id)
)

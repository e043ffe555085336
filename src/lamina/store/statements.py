"""Every SQL statement the metadata backends run, built once in SQLAlchemy Core and compiled per dialect.

Why compiled once and run by the driver (not through a SQLAlchemy engine): on the 2-core CI VM,
SQLAlchemy's per-call execution path cost ~0.5-1.2 ms per statement (building the statement per call:
~1.8 ms), while the same SQL handed to the driver takes 15-60 us on SQLite and ~100 us on PostgreSQL
over loopback. A manifest PUT is ~6 statements and a blob push ~4 write transactions, so this is most of
the metadata cost. SQLAlchemy owns the schema, the DDL and the SQL text (one statement definition, two
dialect compilers, no hand-written SQL); only execution is direct.

:func:`compile_statements` turns the definitions into a :class:`Statements` for one dialect: for
SQLite ``?`` placeholders bound from a tuple (the sqlite3 module's fastest path), for PostgreSQL
psycopg's named ``%(name)s`` placeholders bound from a dict. Row locks (``FOR SHARE`` / ``FOR
UPDATE``) are part of the definitions: PostgreSQL takes them, SQLite's compiler drops them (there the
whole write transaction holds the database's one write lock). Bind parameter names are the keys
callers pass to :meth:`Compiled.bind`. Repositories are addressed by name through the ``_REPO``
subquery, so each hot read (manifest by tag or digest, blob-link lookup) is one indexed statement.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import ClauseElement

from .schema import (
    blob_checks,
    blob_links,
    login_failures,
    manifest_refs,
    manifests,
    metadata,
    repositories,
    tags,
    upload_sessions,
)

__all__ = [
    "POSTGRESQL",
    "SNAPSHOT_ISOLATION",
    "SQLITE",
    "Compiled",
    "MigrationStatements",
    "Statements",
    "advisory_locks",
    "compile_statements",
    "ddl",
    "migration_statements",
]


@dataclass(frozen=True, slots=True)
class Compiled:
    """SQL text, the parameter names in order (positional dialects) and the statement's own literals."""

    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    positional: bool = True

    def bind(self, **values: Any) -> Any:
        """Parameters for the driver (a tuple, or a dict for named placeholders); KeyError names any the
        caller forgot."""
        merged = {**self.defaults, **values} if self.defaults else values
        if self.positional:
            return tuple(merged[name] for name in self.names)
        return {name: merged[name] for name in self.names}


def _compile(statement: ClauseElement, dialect: Dialect) -> Compiled:
    compiled = statement.compile(dialect=dialect)
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.params)
    defaults = {key: value for key, value in compiled.params.items() if value is not None}
    return Compiled(str(compiled), names, defaults, positional)


SQLITE: Dialect = sqlite.dialect()  # qmark
POSTGRESQL: Dialect = postgresql.psycopg.dialect(paramstyle="pyformat")


def ddl(
    dialect: Dialect, *, only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """CREATE TABLE and CREATE INDEX (IF NOT EXISTS) for every table (or the ``only`` ones, less the
    ``exclude`` ones), in dependency order. Migrations run between the two (an index may name a column
    an older database gets only from its migration)."""
    chosen = [t for t in metadata.sorted_tables if (only is None or t.name in only) and t.name not in exclude]
    tables = tuple(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)) for table in chosen)
    indexes = tuple(
        str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
        for table in chosen
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    )
    return tables, indexes


@dataclass(frozen=True, slots=True)
class Statements:
    """The compiled statements of one dialect (see :func:`_definitions` for what each one does)."""

    no_limit: int | None  # the LIMIT value meaning "all rows": -1 on SQLite, NULL on PostgreSQL
    # repositories and blob links
    repo_id: Compiled
    insert_repo: Compiled
    link_blob: Compiled
    linked_size: Compiled
    linked_size_by_id: Compiled
    lock_link: Compiled
    unlink_blob: Compiled
    blob_referenced_by: Compiled
    repos_with_blob: Compiled
    list_repos: Compiled
    # manifests and tags
    manifest_size_by_id: Compiled
    insert_manifest: Compiled
    insert_ref: Compiled
    upsert_tag: Compiled
    tag_digest_by_id: Compiled
    manifest_by_digest: Compiled
    manifest_by_tag: Compiled
    delete_manifest: Compiled
    delete_tag: Compiled
    list_tags: Compiled
    referrers: Compiled
    referrers_of_type: Compiled
    last_pulled: Compiled
    record_pull: Compiled
    # upload sessions
    insert_upload: Compiled
    get_upload: Compiled
    update_upload: Compiled
    delete_upload: Compiled
    uploads_of_repository: Compiled
    uploads_of_user: Compiled
    expired_uploads: Compiled
    # garbage collection (lamina.store.sweep)
    gc_untagged: Compiled
    gc_stale_links: Compiled
    gc_delete_stale_links: Compiled
    gc_live_digests: Compiled
    gc_is_live: Compiled
    # inventory and lifecycle (lamina.store.inventory)
    inv_manifests: Compiled
    inv_tags: Compiled
    inv_refs: Compiled
    inv_repos: Compiled
    inv_repo_blob_bytes: Compiled
    inv_totals: Compiled
    lock_manifest: Compiled
    delete_if_unchanged: Compiled
    # integrity (lamina.store.integrity)
    all_links: Compiled
    all_refs: Compiled
    all_manifests: Compiled
    all_tags: Compiled
    linked_in: Compiled
    delete_links: Compiled
    fix_size: Compiled
    manifest_content: Compiled
    manifest_tags: Compiled
    insert_link: Compiled
    checked: Compiled
    record_check: Compiled
    forget_check: Compiled
    checked_digests: Compiled
    ping: Compiled
    # failed-login counters (lamina.store.sqllogins)
    login_locked_until: Compiled
    login_row: Compiled
    login_upsert: Compiled
    login_count: Compiled
    login_forget: Compiled
    login_drop_oldest: Compiled


def _definitions(dialect: Dialect) -> dict[str, ClauseElement]:
    """Every statement as SQLAlchemy Core, for ``dialect`` (only upserts differ in how they are built)."""
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    joined = func.string_agg if dialect.name == "postgresql" else func.group_concat
    repo = select(repositories.c.id).where(repositories.c.name == bindparam("repository")).scalar_subquery()
    out: dict[str, ClauseElement] = {}

    # -- repositories and blob links ---------------------------------------------------------------
    out["repo_id"] = select(repositories.c.id).where(repositories.c.name == bindparam("repository"))
    out["insert_repo"] = (  # RETURNING: the new id (nothing when a concurrent writer inserted it first)
        insert(repositories)
        .values(name=bindparam("repository"), created_at=bindparam("now"))
        .on_conflict_do_nothing(index_elements=[repositories.c.name])
        .returning(repositories.c.id)
    )
    link = insert(blob_links).values(
        repository_id=bindparam("repo_id"), digest=bindparam("b_digest"), size=bindparam("b_size"),
        linked_at=bindparam("now"),
    )
    out["link_blob"] = link.on_conflict_do_update(  # a re-upload or re-mount refreshes the GC grace period
        index_elements=[blob_links.c.repository_id, blob_links.c.digest], set_={"linked_at": link.excluded.linked_at}
    )
    out["linked_size"] = select(blob_links.c.size).where(
        blob_links.c.repository_id == repo, blob_links.c.digest == bindparam("digest")
    )
    out["linked_size_by_id"] = (  # a manifest PUT's reference check: the link may not go until it commits
        select(blob_links.c.size)
        .where(blob_links.c.repository_id == bindparam("repo_id"), blob_links.c.digest == bindparam("digest"))
        .with_for_update(read=True)
    )
    out["lock_link"] = (  # unlink: hold the link against concurrent reference checks, then look at the refs
        select(blob_links.c.size)
        .where(blob_links.c.repository_id == repo, blob_links.c.digest == bindparam("digest"))
        .with_for_update()
    )
    out["unlink_blob"] = delete(blob_links).where(
        blob_links.c.repository_id == repo, blob_links.c.digest == bindparam("digest")
    )
    out["blob_referenced_by"] = (  # a manifest of the repository naming the blob (config, layer)
        select(manifest_refs.c.manifest_digest)
        .where(
            manifest_refs.c.repository_id == repo,
            manifest_refs.c.target_digest == bindparam("digest"),
            manifest_refs.c.is_manifest.is_(False),
        )
        .order_by(manifest_refs.c.manifest_digest)
        .limit(1)
    )
    out["repos_with_blob"] = (
        select(repositories.c.name)
        .join(blob_links, blob_links.c.repository_id == repositories.c.id)
        .where(blob_links.c.digest == bindparam("digest"))
        .order_by(repositories.c.name)
        .limit(bindparam("limit"))
    )
    out["list_repos"] = (
        select(repositories.c.name)
        .where(repositories.c.name > bindparam("last"))
        .order_by(repositories.c.name)
        .limit(bindparam("limit"))
    )

    # -- manifests and tags ------------------------------------------------------------------------
    out["manifest_size_by_id"] = (  # an index's child: may not be deleted until the index commits
        select(manifests.c.size)
        .where(manifests.c.repository_id == bindparam("repo_id"), manifests.c.digest == bindparam("digest"))
        .with_for_update(read=True)
    )
    out["insert_manifest"] = insert(manifests).on_conflict_do_nothing()  # parameter names = column keys
    out["insert_ref"] = insert(manifest_refs).on_conflict_do_nothing()
    tag = insert(tags).values(
        repository_id=bindparam("repo_id"), tag=bindparam("b_tag"), digest=bindparam("b_digest"),
        updated_at=bindparam("now"),
    )
    out["upsert_tag"] = tag.on_conflict_do_update(
        index_elements=[tags.c.repository_id, tags.c.tag],
        set_={"digest": tag.excluded.digest, "updated_at": tag.excluded.updated_at},
    )
    out["tag_digest_by_id"] = (
        select(tags.c.digest)
        .where(tags.c.repository_id == bindparam("repo_id"), tags.c.tag == bindparam("b_tag"))
        .with_for_update()
    )
    other = tags.alias("t")
    tags_of_manifest = (  # "\n"-joined tag names (tags never contain "\n"), or NULL
        select(joined(other.c.tag, "\n"))
        .where(other.c.repository_id == manifests.c.repository_id, other.c.digest == manifests.c.digest)
        .scalar_subquery()
    )
    columns = (
        manifests.c.digest, manifests.c.media_type, manifests.c.content, manifests.c.kind,
        manifests.c.artifact_type, manifests.c.subject, manifests.c.annotations, manifests.c.pushed_at,
        manifests.c.last_pulled_at, tags_of_manifest,
    )
    out["manifest_by_digest"] = select(*columns).where(
        manifests.c.repository_id == repo, manifests.c.digest == bindparam("digest")
    )
    out["manifest_by_tag"] = (
        select(*columns)
        .select_from(
            tags.join(manifests, and_(tags.c.repository_id == manifests.c.repository_id,
                                      tags.c.digest == manifests.c.digest))
        )
        .where(tags.c.repository_id == repo, tags.c.tag == bindparam("tag"))
    )
    out["delete_manifest"] = delete(manifests).where(
        manifests.c.repository_id == repo, manifests.c.digest == bindparam("digest")
    )
    out["delete_tag"] = delete(tags).where(tags.c.repository_id == repo, tags.c.tag == bindparam("tag"))
    out["list_tags"] = (
        select(tags.c.tag)
        .where(tags.c.repository_id == repo, tags.c.tag > bindparam("last"))
        .order_by(tags.c.tag)
        .limit(bindparam("limit"))
    )
    referrers = (
        select(manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.artifact_type,
               manifests.c.annotations)
        .where(
            manifests.c.repository_id == repo,
            manifests.c.subject == bindparam("subject"),
            manifests.c.digest > bindparam("after"),  # paging: "" for the first page
        )
        .order_by(manifests.c.digest)
        .limit(bindparam("limit"))
    )
    out["referrers"] = referrers
    out["referrers_of_type"] = referrers.where(manifests.c.artifact_type == bindparam("artifact_type"))
    out["last_pulled"] = select(manifests.c.last_pulled_at).where(
        manifests.c.repository_id == repo, manifests.c.digest == bindparam("digest")
    )
    out["record_pull"] = (
        update(manifests)
        .where(
            manifests.c.repository_id == repo,
            manifests.c.digest == bindparam("b_digest"),
            or_(manifests.c.last_pulled_at.is_(None), manifests.c.last_pulled_at < bindparam("when")),
        )
        .values(last_pulled_at=bindparam("when"))
    )

    # -- upload sessions ---------------------------------------------------------------------------
    out["insert_upload"] = upload_sessions.insert()  # parameter names = column keys
    out["get_upload"] = select(upload_sessions).where(upload_sessions.c.id == bindparam("upload_id"))
    out["update_upload"] = (
        update(upload_sessions)
        .where(upload_sessions.c.id == bindparam("upload_id"))
        .values(size=bindparam("new_size"), updated_at=bindparam("when"))
    )
    out["delete_upload"] = delete(upload_sessions).where(upload_sessions.c.id == bindparam("upload_id"))
    live = upload_sessions.c.updated_at >= bindparam("live_since")
    count_live = (func.count(), func.min(upload_sessions.c.updated_at))
    out["uploads_of_repository"] = select(*count_live).where(
        upload_sessions.c.repository == bindparam("repository"), live
    )
    out["uploads_of_user"] = select(*count_live).where(upload_sessions.c.user == bindparam("user"), live)
    out["expired_uploads"] = (
        select(upload_sessions)
        .where(upload_sessions.c.updated_at < bindparam("older_than"))
        .order_by(upload_sessions.c.updated_at, upload_sessions.c.id)
    )
    out.update(_maintenance(repo))
    return out


def _maintenance(repo: Any) -> dict[str, ClauseElement]:
    """Garbage collection, inventory, lifecycle and integrity: whole-registry scans and their deletes."""
    out: dict[str, ClauseElement] = {}
    child = manifest_refs.alias("child")
    subject = manifests.alias("subj")
    not_a_child = ~exists().where(
        child.c.repository_id == manifests.c.repository_id,
        child.c.target_digest == manifests.c.digest,
        child.c.is_manifest.is_(True),
    )
    # untagged manifests older than :cutoff that are neither an index's child nor a referrer of a live subject
    out["gc_untagged"] = (
        select(repositories.c.name, manifests.c.digest, manifests.c.size)
        .join(repositories, repositories.c.id == manifests.c.repository_id)
        .where(
            manifests.c.pushed_at < bindparam("cutoff"),
            ~exists().where(tags.c.repository_id == manifests.c.repository_id, tags.c.digest == manifests.c.digest),
            not_a_child,
            ~exists().where(subject.c.repository_id == manifests.c.repository_id,
                            subject.c.digest == manifests.c.subject),
        )
    )
    unreferenced_link = and_(
        blob_links.c.linked_at < bindparam("cutoff"),
        ~exists().where(
            manifest_refs.c.repository_id == blob_links.c.repository_id,
            manifest_refs.c.target_digest == blob_links.c.digest,
        ),
    )
    out["gc_stale_links"] = (
        select(repositories.c.name, blob_links.c.digest, blob_links.c.size)
        .join(repositories, repositories.c.id == blob_links.c.repository_id)
        .where(unreferenced_link)
    )
    out["gc_delete_stale_links"] = delete(blob_links).where(unreferenced_link)
    out["gc_live_digests"] = union(
        select(blob_links.c.digest),
        select(manifest_refs.c.target_digest).where(manifest_refs.c.is_manifest.is_(False)),
    )
    out["gc_is_live"] = select(
        exists().where(blob_links.c.digest == bindparam("digest"))
        | exists().where(manifest_refs.c.target_digest == bindparam("digest"), manifest_refs.c.is_manifest.is_(False))
    )

    out["inv_manifests"] = select(
        manifests.c.digest, manifests.c.media_type, manifests.c.kind, manifests.c.artifact_type,
        manifests.c.subject, manifests.c.size, manifests.c.pushed_at, manifests.c.last_pulled_at,
    ).where(manifests.c.repository_id == repo)
    out["inv_tags"] = select(tags.c.digest, tags.c.tag).where(tags.c.repository_id == repo)
    out["inv_refs"] = select(
        manifest_refs.c.manifest_digest, manifest_refs.c.target_digest, manifest_refs.c.size,
        manifest_refs.c.is_manifest,
    ).where(manifest_refs.c.repository_id == repo)
    of_repo = manifests.c.repository_id == repositories.c.id
    out["inv_repos"] = select(
        repositories.c.name,
        select(func.count()).where(of_repo).scalar_subquery(),
        select(func.count()).where(tags.c.repository_id == repositories.c.id).scalar_subquery(),
        select(func.max(manifests.c.pushed_at)).where(of_repo).scalar_subquery(),
        select(func.coalesce(func.sum(manifests.c.size), literal_column("0"))).where(of_repo).scalar_subquery(),
    ).order_by(repositories.c.name)
    distinct_refs = (
        select(manifest_refs.c.repository_id, manifest_refs.c.target_digest,
               func.max(manifest_refs.c.size).label("size"))
        .where(manifest_refs.c.is_manifest.is_(False))
        .group_by(manifest_refs.c.repository_id, manifest_refs.c.target_digest)
        .subquery()
    )
    out["inv_repo_blob_bytes"] = (
        select(repositories.c.name, func.sum(distinct_refs.c.size))
        .join(repositories, repositories.c.id == distinct_refs.c.repository_id)
        .group_by(repositories.c.id, repositories.c.name)
    )
    distinct_blobs = (
        select(blob_links.c.digest, func.max(blob_links.c.size).label("size")).group_by(blob_links.c.digest).subquery()
    )
    out["inv_totals"] = select(
        select(func.count()).select_from(distinct_blobs).scalar_subquery(),
        select(func.coalesce(func.sum(distinct_blobs.c.size), literal_column("0"))).scalar_subquery(),
        select(func.count()).select_from(repositories).scalar_subquery(),
        select(func.count()).select_from(manifests).scalar_subquery(),
        select(func.count()).select_from(upload_sessions).scalar_subquery(),
    )
    out["lock_manifest"] = (  # holds off a tag moving onto it (the tag's foreign key) until we decide
        select(manifests.c.size)
        .where(manifests.c.repository_id == repo, manifests.c.digest == bindparam("digest"))
        .with_for_update()
    )
    out["delete_if_unchanged"] = delete(manifests).where(
        manifests.c.repository_id == repo, manifests.c.digest == bindparam("digest"), not_a_child
    )

    out["all_links"] = select(repositories.c.name, blob_links.c.digest, blob_links.c.size).join(
        repositories, repositories.c.id == blob_links.c.repository_id
    )
    out["all_refs"] = select(
        repositories.c.name, manifest_refs.c.manifest_digest, manifest_refs.c.target_digest,
        manifest_refs.c.size, manifest_refs.c.is_manifest,
    ).join(repositories, repositories.c.id == manifest_refs.c.repository_id)
    out["all_manifests"] = select(repositories.c.name, manifests.c.digest, manifests.c.content).join(
        repositories, repositories.c.id == manifests.c.repository_id
    )
    out["all_tags"] = select(repositories.c.name, tags.c.digest, tags.c.tag).join(
        repositories, repositories.c.id == tags.c.repository_id
    )
    out["linked_in"] = (
        select(repositories.c.name, blob_links.c.size)
        .join(repositories, repositories.c.id == blob_links.c.repository_id)
        .where(blob_links.c.digest == bindparam("digest"))
    )
    out["delete_links"] = delete(blob_links).where(blob_links.c.digest == bindparam("digest"))
    out["fix_size"] = (
        blob_links.update()
        .where(blob_links.c.digest == bindparam("digest"), blob_links.c.size != bindparam("size"))
        .values(size=bindparam("size"))
    )
    out["manifest_content"] = select(manifests.c.content).where(
        manifests.c.repository_id == repo, manifests.c.digest == bindparam("digest")
    )
    out["manifest_tags"] = select(tags.c.tag).where(tags.c.repository_id == repo, tags.c.digest == bindparam("digest"))
    return out


def _dialect_inserts(dialect: Dialect, repo: Any) -> dict[str, ClauseElement]:
    """The maintenance statements that are upserts (built with the dialect's own INSERT)."""
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    record = insert(blob_checks).values(
        digest=bindparam("digest"), inode=bindparam("inode"), size=bindparam("size"),
        mtime_ns=bindparam("mtime_ns"), ctime_ns=bindparam("ctime_ns"), checked_at=bindparam("now"),
    )
    return {
        "insert_link": (
            insert(blob_links)
            .values(repository_id=repo, digest=bindparam("digest"), size=bindparam("size"),
                    linked_at=bindparam("now"))
            .on_conflict_do_nothing()
            .inline()  # no RETURNING of the subquery's primary key: rowcount says whether a link was added
        ),
        "checked": select(blob_checks.c.inode, blob_checks.c.size, blob_checks.c.mtime_ns, blob_checks.c.ctime_ns)
        .where(blob_checks.c.digest == bindparam("digest")),
        "record_check": record.on_conflict_do_update(
            index_elements=[blob_checks.c.digest],
            set_={name: record.excluded[name] for name in ("inode", "size", "mtime_ns", "ctime_ns", "checked_at")},
        ),
        "forget_check": delete(blob_checks).where(blob_checks.c.digest == bindparam("digest")),
        "checked_digests": select(blob_checks.c.digest),
        "ping": select(repositories.c.id).limit(1),
        **_login_statements(insert),
    }


def _login_statements(insert: Any) -> dict[str, ClauseElement]:
    """The failed-login counters: read, upsert, and the bound on how many keys are kept."""
    row = insert(login_failures).values(
        key=bindparam("key"), failures=bindparam("failures"), window_start=bindparam("window_start"),
        locked_until=bindparam("locked_until"), strikes=bindparam("strikes"), last_failure=bindparam("last_failure"),
    )
    columns = ("failures", "window_start", "locked_until", "strikes", "last_failure")
    oldest = select(login_failures.c.key).order_by(login_failures.c.last_failure).limit(bindparam("excess"))
    return {
        "login_locked_until": select(func.max(login_failures.c.locked_until)).where(
            login_failures.c.key.in_([bindparam("key_a"), bindparam("key_b")])
        ),
        "login_row": select(*(login_failures.c[name] for name in columns))
        .where(login_failures.c.key == bindparam("key"))
        .with_for_update(),
        "login_upsert": row.on_conflict_do_update(
            index_elements=[login_failures.c.key], set_={name: row.excluded[name] for name in columns}
        ),
        "login_count": select(func.count()).select_from(login_failures),
        "login_forget": delete(login_failures).where(  # keys no rule remembers any more
            login_failures.c.locked_until < bindparam("now"),
            login_failures.c.last_failure < bindparam("window_cutoff"),
            login_failures.c.last_failure < bindparam("quiet_cutoff"),
            login_failures.c.locked_until < bindparam("quiet_cutoff"),
        ),
        "login_drop_oldest": delete(login_failures).where(login_failures.c.key.in_(oldest.scalar_subquery())),
    }


def compile_statements(dialect: Dialect) -> Statements:
    """Every statement compiled for ``dialect`` (:data:`SQLITE` or :data:`POSTGRESQL`)."""
    repo = select(repositories.c.id).where(repositories.c.name == bindparam("repository")).scalar_subquery()
    definitions = {**_definitions(dialect), **_dialect_inserts(dialect, repo)}
    names = {f.name for f in fields(Statements)} - {"no_limit"}
    missing, extra = names - set(definitions), set(definitions) - names
    if missing or extra:  # a programming error: caught by the first import in any test
        raise RuntimeError(f"statements: missing {sorted(missing)}, undeclared {sorted(extra)}")
    compiled = {name: _compile(statement, dialect) for name, statement in definitions.items()}
    return Statements(no_limit=-1 if dialect.name == "sqlite" else None, **compiled)


# -- PostgreSQL only: advisory locks and the schema_version table of lamina.store.migrations -------------

_migrations_metadata = MetaData()
schema_versions = Table(
    "schema_version",
    _migrations_metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class MigrationStatements:
    create_table: str
    current: Compiled
    record: Compiled


def migration_statements() -> MigrationStatements:
    """The statements :mod:`lamina.store.migrations` runs around the migrations themselves."""
    return MigrationStatements(
        create_table=str(CreateTable(schema_versions, if_not_exists=True).compile(dialect=POSTGRESQL)),
        current=_compile(select(func.coalesce(func.max(schema_versions.c.version), 0)), POSTGRESQL),
        record=_compile(schema_versions.insert(), POSTGRESQL),
    )


@functools.lru_cache(maxsize=16)
def advisory_locks(gate: str | None, keys: int) -> Compiled:
    """``SELECT`` taking PostgreSQL transaction-level advisory locks in one round trip: the GC gate
    (``gate``: "shared" or "exclusive", parameter ``gate``) first, then ``keys`` exclusive per-name locks
    (parameters ``k0``, ``k1``, ...; callers pass them sorted, so every transaction locks in one order)."""
    calls = []
    if gate is not None:
        lock = func.pg_advisory_xact_lock_shared if gate == "shared" else func.pg_advisory_xact_lock
        calls.append(lock(bindparam("gate", type_=BigInteger)))
    calls += [func.pg_advisory_xact_lock(bindparam(f"k{n}", type_=BigInteger)) for n in range(keys)]
    return _compile(select(*calls), POSTGRESQL)


SNAPSHOT_ISOLATION = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"  # PostgreSQL, first in a transaction

"""The registry's metadata schema (SQLAlchemy Core), all SQL tables in one place.

::

    repositories                      blob_links                         upload_sessions
    +-------------+                   +----------------------+            +-------------------+
    | id       PK |<--+--------------| repository_id  PK,FK |            | id             PK |
    | name   UNIQ |   |               | digest         PK    |            | repository   (ix) |
    | created_at  |   |               | size                 |            | size              |
    +-------------+   |               | linked_at            |            | started_at        |
                      |               +----------------------+            | updated_at   (ix) |
                      |               (ix: digest -> repos holding it)    | user         (ix) |
                      |                                                   +-------------------+
                      |
                      |  manifests                                  manifest_refs
                      |  +------------------------+                 +------------------------+
                      +--| repository_id   PK,FK  |<----------------| repository_id  PK,FK   |
                      |  | digest          PK     |<-+              | manifest_digest PK,FK  |
                      |  | media_type             |  |              | target_digest  PK (ix) |
                      |  | content  BLOB          |  |              | size                   |
                      |  | kind                   |  |              | is_manifest            |
                      |  | artifact_type          |  |              +------------------------+
                      |  | subject (ix repo,subj) |  |               blob or child manifest a
                      |  | annotations  (json)    |  |               manifest points at
                      |  | size                   |  |
                      |  | pushed_at              |  |   tags
                      |  | last_pulled_at         |  |   +------------------------+
                      |  +------------------------+  +---| repository_id, digest FK|
                      +------------------------------+---| repository_id   PK     |
                                                         | tag             PK     |
                                                         | updated_at             |
                                                         +------------------------+

    blob_checks                       one row per blob file whose bytes were re-hashed and matched
    +----------------------+          its digest (verification on read, lamina.store.integrity);
    | digest            PK |          valid only while the file's identity (inode, size, mtime,
    | inode, size          |          ctime) is the one recorded: any write, truncation or
    | mtime_ns, ctime_ns   |          replacement changes it, and the next read re-hashes
    | checked_at           |
    +----------------------+

Manifest bytes live in ``manifests.content`` so a manifest PUT (validate references, store, move the tag)
is one transaction. Deleting a repository cascades to everything in it; deleting a manifest cascades to its
references and to every tag pointing at it. ``upload_sessions.repository`` is plain text: starting an
upload does not create a repository. Digests are stored as ``algorithm:hex`` text. Times are Unix seconds.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "SCHEMA_VERSION",
    "blob_checks",
    "blob_links",
    "login_failures",
    "manifest_refs",
    "manifests",
    "metadata",
    "repositories",
    "tags",
    "upload_sessions",
]

SCHEMA_VERSION = 2  # SQLite: PRAGMA user_version; PostgreSQL: lamina.store.migrations' schema_version table
# 1 -> 2: upload_sessions.user (sqlite.SqliteMetadataStore.create_schema adds the column)

# Column types that differ by dialect without changing SQLite's DDL (databases made by older versions and
# new ones stay identical there): PostgreSQL's INTEGER is 32-bit, so sizes, inodes and nanosecond times are
# BIGINT; names, tags and digests sort byte-wise (COLLATE "C", the catalog's and tag list's lexical order
# whatever the database's default collation; SQLite compares text byte-wise already).
Size = BigInteger().with_variant(Integer(), "sqlite")


def _text_key(length: int) -> String:
    return String(length).with_variant(String(length, collation="C"), "postgresql")  # type: ignore[return-value]


metadata = MetaData()

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", _text_key(255), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

blob_links = Table(
    "blob_links",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", _text_key(200), primary_key=True),
    Column("size", Size, nullable=False),
    Column("linked_at", Float, nullable=False),
    Index("ix_blob_links_digest", "digest"),
    sqlite_with_rowid=False,
)

manifests = Table(
    "manifests",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", _text_key(200), primary_key=True),
    Column("media_type", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("artifact_type", Text),
    Column("subject", _text_key(200)),
    Column("annotations", Text),
    Column("size", Size, nullable=False),
    Column("pushed_at", Float, nullable=False),
    Column("last_pulled_at", Float),
    Index("ix_manifests_subject", "repository_id", "subject", "digest"),
)

manifest_refs = Table(
    "manifest_refs",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("manifest_digest", _text_key(200), primary_key=True),
    Column("target_digest", _text_key(200), primary_key=True),
    Column("size", Size, nullable=False),
    Column("is_manifest", Boolean, nullable=False),
    ForeignKeyConstraint(
        ["repository_id", "manifest_digest"],
        ["manifests.repository_id", "manifests.digest"],
        ondelete="CASCADE",
    ),
    Index("ix_manifest_refs_target", "repository_id", "target_digest"),
    sqlite_with_rowid=False,
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("tag", _text_key(128), primary_key=True),
    Column("digest", _text_key(200), nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(
        ["repository_id", "digest"],
        ["manifests.repository_id", "manifests.digest"],
        ondelete="CASCADE",
    ),
    Index("ix_tags_digest", "repository_id", "digest"),
    sqlite_with_rowid=False,
)

upload_sessions = Table(
    "upload_sessions",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("repository", String(255), nullable=False),
    Column("size", Size, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("user", String(255)),  # schema 2; NULL: anonymous (the per-user session limit skips it)
    Index("ix_upload_sessions_updated", "updated_at"),
    Index("ix_upload_sessions_repository", "repository", "updated_at"),
    Index("ix_upload_sessions_user", "user", "updated_at"),
)

login_failures = Table(  # failed logins (lamina.registry.auth.limits); a table added in place, like blob_checks
    "login_failures",
    metadata,
    Column("key", String(64), primary_key=True),  # SHA-256 hex of "user\0address" or "\0address"
    Column("failures", Integer, nullable=False),  # counted in the current window
    Column("window_start", Float, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("strikes", Integer, nullable=False),  # lockouts so far: the backoff's exponent
    Column("last_failure", Float, nullable=False),
    Index("ix_login_failures_last", "last_failure"),
    sqlite_with_rowid=False,
)

blob_checks = Table(  # a table added in place (CREATE IF NOT EXISTS): no schema version change needed
    "blob_checks",
    metadata,
    Column("digest", _text_key(200), primary_key=True),
    Column("inode", Size, nullable=False),
    Column("size", Size, nullable=False),
    Column("mtime_ns", Size, nullable=False),
    Column("ctime_ns", Size, nullable=False),
    Column("checked_at", Float, nullable=False),
    sqlite_with_rowid=False,
)

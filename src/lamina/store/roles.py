"""The metadata store's roles: small protocols, each what one kind of caller needs.

Every metadata backend (SQLite: :mod:`lamina.store.sqlite`; PostgreSQL: :mod:`lamina.store.postgres`)
implements all of them in one object, :class:`MetadataStore`; callers name the smallest role they use,
so what a piece of code may do to the database is visible in its signature, and nothing outside the
backend opens the database or holds SQL. The consistency rules behind each role are in
:mod:`lamina.store.base` (request path) and :mod:`lamina.store.sweep` (garbage collection).

Callbacks (``present``, ``still``, ``act``) run *inside* the backend's write transaction, while it holds
the lock the conflicting writers take (SQLite: the database's write lock; PostgreSQL: the GC gate, an
advisory lock, see :mod:`lamina.store.postgres`): that is how a file check or a file move and a database
change become one atomic step against garbage collection and pushes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from lamina.oci import Digest

from .base import ManifestRecord, ManifestReference, ReferrerRecord, TagCondition, UploadLimits, UploadSession
from .leases import Lease
from .views import Garbage, LoginRow, LoginTrim, ManifestInfo, RepositoryInfo, Snapshot

__all__ = [
    "BlobLinks",
    "GcQueries",
    "Health",
    "Inventory",
    "Lifecycle",
    "LoginFailures",
    "MaintenanceLeases",
    "ManifestsAndTags",
    "MetadataStore",
    "Referrers",
    "Repairs",
    "Repositories",
    "UploadSessions",
    "VerificationRecords",
]

Identity = tuple[int, int, int, int]  # a blob file's (inode, size, mtime_ns, ctime_ns)


class BlobLinks(Protocol):
    """Which repository may serve which blob (a push or a cross-repository mount links it)."""

    def link_blob(
        self, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None = None
    ) -> None:
        """Link (or re-link: refreshes ``linked_at``) a blob; ``present`` is checked inside the write
        transaction and BlobUnknown raised if it says the bytes are gone (the GC race, see store.sweep)."""
        ...

    def link_uploaded_blob(
        self, session_id: str, repository: str, digest: Digest, size: int, present: Callable[[], bool] | None = None
    ) -> None:
        """``link_blob`` plus ``delete_upload(session_id)``, atomically (one commit per finished push)."""
        ...

    def linked_blob_size(self, repository: str, digest: Digest) -> int | None: ...
    def unlink_blob(self, repository: str, digest: Digest, *, force: bool = False) -> bool:
        """Remove the blob's link (False: it was not linked); BlobReferenced, in the same write transaction,
        when a manifest of the repository names it, unless ``force``."""
        ...

    def repositories_with_blob(self, digest: Digest, limit: int = 1) -> Sequence[str]: ...


class Repositories(Protocol):
    def repository_exists(self, repository: str) -> bool: ...
    def list_repositories(self, last: str | None, limit: int | None) -> Sequence[str]:
        """Names after ``last`` in byte order (the catalog's lexical order), at most ``limit``."""
        ...


class ManifestsAndTags(Protocol):
    def put_manifest(
        self,
        record: ManifestRecord,
        references: Sequence[ManifestReference],
        tag: str | None,
        immutable: bool = False,
        condition: TagCondition | None = None,
    ) -> None:
        """Store the manifest, its references and the tag in one transaction; raises MissingReference,
        TagImmutable when ``immutable`` and the tag already names another digest, or TagPreconditionFailed
        when ``condition`` does not hold for the tag's current digest (checked in the same transaction, so
        of two writers conditioned on the same digest only one can win). A tag already at ``record``'s
        digest counts as moved (the change already happened: RFC 9110 13.1.1), whatever the condition."""
        ...

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """By tag or by digest string."""
        ...

    def delete_manifest(self, repository: str, digest: Digest) -> bool: ...
    def delete_tag(self, repository: str, tag: str) -> bool: ...
    def list_tags(self, repository: str, last: str | None, limit: int | None) -> Sequence[str]: ...
    def record_pull(self, repository: str, digest: Digest, when: float) -> None: ...


class Referrers(Protocol):
    def referrers(
        self,
        repository: str,
        subject: Digest,
        artifact_type: str | None,
        last: Digest | None = None,
        limit: int | None = None,
    ) -> Sequence[ReferrerRecord]:
        """Sorted by digest; paged: up to ``limit`` (None: all) whose digest sorts after ``last``."""
        ...


class UploadSessions(Protocol):
    def create_upload(self, session: UploadSession, limits: UploadLimits | None = None) -> None:
        """Record a new session; with ``limits``, counted and inserted in one write transaction (so
        concurrent workers cannot overshoot), UploadLimitReached when the repository or the user is full."""
        ...

    def get_upload(self, session_id: str) -> UploadSession | None: ...
    def update_upload(self, session_id: str, size: int, when: float) -> None: ...
    def delete_upload(self, session_id: str) -> None: ...
    def expired_uploads(self, older_than: float) -> Sequence[UploadSession]: ...


class GcQueries(Protocol):
    """The database half of garbage collection (the protocol is drawn in :mod:`lamina.store.sweep`)."""

    def collect_garbage(self, cutoff: float, *, delete_untagged: bool, commit: bool) -> Garbage:
        """Phase 1, one exclusive write transaction: untagged manifests (when asked) and unreferenced links
        older than ``cutoff`` removed, and the digests still live afterwards; rolled back unless ``commit``."""
        ...

    def sweep_guard(self) -> AbstractContextManager[Callable[[str], bool]]:
        """Phase 2: an exclusive write transaction (no link can be created meanwhile) yielding ``is_live``."""
        ...


class Inventory(Protocol):
    """Whole-registry read views for the console and ``/metrics``, each from one consistent snapshot."""

    def repository_infos(self) -> list[RepositoryInfo]: ...
    def manifest_infos(self, repository: str) -> list[ManifestInfo]:
        """Every manifest of ``repository`` with its tags and references, newest push first."""
        ...

    def storage_totals(self) -> dict[str, int]:
        """Distinct linked blobs and their bytes, repositories, manifests, open upload sessions."""
        ...


class Lifecycle(Protocol):
    def delete_manifest_if_unchanged(self, repository: str, digest: str, expected_tags: Sequence[str]) -> bool:
        """Delete the manifest if its tags are still ``expected_tags`` and no index lists it (one transaction)."""
        ...


class Health(Protocol):
    def health_problem(self) -> str | None:
        """None when the database answers a query; else one line saying what is wrong."""
        ...


class VerificationRecords(Protocol):
    """Blob files re-hashed and found good, valid while the file's identity stays the same."""

    def is_verified(self, digest: Digest, identity: Identity) -> bool: ...
    def record_verified(self, digest: Digest, identity: Identity) -> None: ...
    def forget_check(self, digest: Digest) -> None: ...
    def forget_checks(self, gone: Callable[[str], bool]) -> int:
        """Drop the records whose digest ``gone`` says (under the write lock); how many."""
        ...


class Repairs(Protocol):
    """fsck's view of the whole database and its repairs; each repair runs ``still``/``act`` under the
    exclusive write lock and changes nothing when it says the problem went away meanwhile."""

    def snapshot(self) -> Snapshot: ...
    def drop_blob_links(self, digest: Digest, act: Callable[[], bool]) -> list[str] | None:
        """If ``act()`` (e.g. "the file is gone", "moved it to quarantine"): drop every link to the blob and
        its verification record; the repositories it was linked in. None when ``act()`` said no."""
        ...

    def fix_link_size(self, digest: Digest, size: int, still: Callable[[], bool]) -> int: ...
    def relink(self, repository: str, manifest: str, digest: Digest, size: int, still: Callable[[], bool]) -> bool:
        """Link a blob the manifest references if the manifest is there and ``still()``; whether linked."""
        ...

    def remove_manifest(
        self, repository: str, digest: str, act: Callable[[bytes, list[str]], bool]
    ) -> bool:
        """Delete the manifest (its tags and references go with it) if ``act(content, tags)`` says so."""
        ...


class MaintenanceLeases(Protocol):
    """Once-at-a-time maintenance across every process of the registry (:mod:`lamina.store.leases`)."""

    def maintenance_lease(self, job: str) -> AbstractContextManager[Lease]:
        """Try to take the lease of ``job`` (gc, lifecycle, uploads) without waiting; the yielded lease's
        ``held`` says whether this process got it. Released when the block ends."""
        ...


class LoginFailures(Protocol):
    """Failed-login counters shared by every worker and replica (lamina.registry.auth.limits)."""

    def login_locked_until(self, keys: Sequence[str]) -> float:
        """The latest ``locked_until`` of these keys (0.0: none recorded)."""
        ...

    def record_login_failures(
        self, keys: Sequence[str], change: Callable[[str, LoginRow | None], LoginRow], trim: LoginTrim
    ) -> None:
        """For each key, ``change(key, current)`` gives its new row, all under the keys' locks in one write
        transaction; then the table is bounded by ``trim``."""
        ...

    def login_failures_tracked(self) -> int: ...


class MetadataStore(
    BlobLinks,
    Repositories,
    ManifestsAndTags,
    Referrers,
    UploadSessions,
    GcQueries,
    Inventory,
    Lifecycle,
    Health,
    VerificationRecords,
    Repairs,
    MaintenanceLeases,
    LoginFailures,
    Protocol,
):
    """Every role: what a backend implements, and what :class:`lamina.store.Storage` holds."""

    def create_schema(self) -> None: ...
    def close(self) -> None: ...

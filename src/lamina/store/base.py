"""The registry's storage seams: small role protocols the HTTP layer talks to.

Two backends sit behind them: blob bytes (content-addressed; filesystem now, S3 later) and metadata
(repositories, manifests, tags, blob links, upload sessions, push/pull times; SQLite now, PostgreSQL
later). The HTTP layer only ever sees these protocols, so adding a backend never touches a route.

Consistency rules every implementation keeps:
- a blob is visible (``BlobStore.size``) only once complete, digest-verified and atomically in place;
- ``put_manifest`` (:mod:`lamina.store.roles`) checks that every referenced blob/manifest is linked to
  the repository *inside the same transaction* that stores the manifest, so a concurrent delete/GC can never leave a
  stored manifest pointing at a missing blob;
- uploads survive restarts: session state lives in metadata, partial bytes in the blob backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from lamina.oci import Digest

__all__ = [
    "BlobReferenced",
    "BlobStore",
    "BlobUnknown",
    "ManifestRecord",
    "ManifestReference",
    "MissingReference",
    "ReferenceSizeMismatch",
    "ReferrerRecord",
    "StoreError",
    "TagCondition",
    "TagImmutable",
    "TagPreconditionFailed",
    "UploadConflict",
    "UploadLimitReached",
    "UploadLimits",
    "UploadSession",
    "UploadStore",
    "UploadUnknown",
]


class StoreError(Exception):
    """Base for storage errors the HTTP layer maps to spec error codes."""


class UploadConflict(StoreError):
    """An upload chunk does not start where the session's data ends (HTTP 416)."""

    def __init__(self, message: str, current_size: int) -> None:
        super().__init__(message)
        self.current_size = current_size


class MissingReference(StoreError):
    """A manifest refers to a blob or child manifest the repository does not have."""

    def __init__(self, digest: Digest, what: str) -> None:
        super().__init__(f"{what} {digest} is not in this repository")
        self.digest = digest
        self.what = what


class ReferenceSizeMismatch(MissingReference):
    """A manifest's descriptor gives a size that differs from the stored blob/manifest (MANIFEST_INVALID).

    A subclass of MissingReference because the repository has no content with *that* digest and size."""

    def __init__(self, digest: Digest, what: str, declared: int, actual: int) -> None:
        StoreError.__init__(
            self, f"{what} {digest} is {actual} bytes in this repository, but the manifest says {declared}"
        )
        self.digest = digest
        self.what = what
        self.declared = declared
        self.actual = actual


class TagImmutable(StoreError):
    """``put_manifest(..., immutable=True)`` would move a tag that already names another digest (DENIED)."""

    def __init__(self, repository: str, tag: str, current: Digest) -> None:
        super().__init__(f"tag {tag!r} in {repository} is immutable and already points at {current}")
        self.repository = repository
        self.tag = tag
        self.current = current


class TagPreconditionFailed(StoreError):
    """``put_manifest(..., condition=...)`` found the tag somewhere the condition does not allow (HTTP 412)."""

    def __init__(self, repository: str, tag: str, current: Digest | None) -> None:
        where = f"points at {current}" if current is not None else "does not exist"
        super().__init__(f"tag {tag!r} in {repository} {where}")
        self.repository = repository
        self.tag = tag
        self.current = current


@dataclass(frozen=True, slots=True)
class TagCondition:
    """A precondition on where a tag points, checked in the transaction that moves it (RFC 9110 13.1.1-2
    over the tag's digest: HTTP ``If-Match`` / ``If-None-Match`` on a manifest PUT by tag).

    ``match``: the tag must exist and point at one of these digests (``"*"``: exist at all).
    ``none_match``: the tag must not point at any of these (``"*"``: must not exist)."""

    match: frozenset[Digest] | Literal["*"] | None = None
    none_match: frozenset[Digest] | Literal["*"] | None = None

    def holds(self, current: Digest | None) -> bool:
        """Whether a tag now at ``current`` (None: no such tag) may be moved."""
        if self.match is not None and (current is None or (self.match != "*" and current not in self.match)):
            return False
        if self.none_match is not None and current is not None:
            return self.none_match != "*" and current not in self.none_match
        return True


class BlobReferenced(StoreError):
    """``unlink_blob`` refused: a manifest of the repository names the blob (config or layer)."""

    def __init__(self, repository: str, digest: Digest, manifest: Digest) -> None:
        super().__init__(f"blob {digest} is used by manifest {manifest} in {repository}")
        self.repository = repository
        self.digest = digest
        self.manifest = manifest


class BlobUnknown(StoreError):
    """The blob store has no complete blob with this digest (BLOB_UNKNOWN)."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"blob {digest} is not in the blob store")
        self.digest = digest


class UploadUnknown(StoreError):
    """No upload session with this id has data here (BLOB_UPLOAD_UNKNOWN): never created, committed or discarded."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"upload session {session_id!r} does not exist")
        self.session_id = session_id


@dataclass(frozen=True, slots=True)
class ManifestReference:
    """Something a manifest points at: a blob (config, layer, legacy cache child) or a child manifest."""

    digest: Digest
    size: int
    is_manifest: bool = False


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    repository: str
    digest: Digest
    media_type: str
    content: bytes
    kind: str  # lamina.oci.ManifestKind value
    artifact_type: str | None
    subject: Digest | None
    annotations_json: str | None
    pushed_at: float
    last_pulled_at: float | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReferrerRecord:
    digest: Digest
    media_type: str
    size: int
    artifact_type: str | None
    annotations_json: str | None


@dataclass(frozen=True, slots=True)
class UploadSession:
    id: str
    repository: str
    size: int  # bytes received so far
    started_at: float
    updated_at: float
    user: str | None = None  # who opened it (None: anonymous, or a registry without auth)


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """How many open sessions ``create_upload`` allows: sessions updated at or after ``live_since``
    count (older ones are abandoned and wait for the janitor); ``per_user`` counts only sessions with a
    user, so anonymous sessions are bounded by ``per_repository`` alone."""

    per_repository: int
    per_user: int
    live_since: float


class UploadLimitReached(StoreError):
    """``create_upload`` would open more sessions than :class:`UploadLimits` allows (TOOMANYREQUESTS)."""

    def __init__(self, scope: Literal["repository", "user"], owner: str, limit: int, oldest_update: float) -> None:
        super().__init__(f"{scope} {owner} already has {limit} open upload sessions, the most allowed")
        self.scope = scope
        self.owner = owner
        self.limit = limit
        self.oldest_update = oldest_update  # updated_at of the oldest counted session: it expires first


class BlobStore(Protocol):
    """Complete, verified, content-addressed blobs."""

    remote: bool  # False: local files (sendfile, stat); True: elsewhere (S3): HEAD answers from metadata

    def size(self, digest: Digest) -> int | None: ...
    def redirect_url(self, digest: Digest) -> str | None:
        """A URL a client may GET the blob from itself (a presigned S3 URL), or None: serve it here."""
        ...

    def read_small(self, digest: Digest, limit: int) -> bytes | None:
        """The whole blob if it has at most ``limit`` bytes, else None (blocking; for configs)."""
        ...

    def local_path(self, digest: Digest) -> Path | None:
        """A file the server may sendfile() from, or None when the backend is not local."""
        ...

    def read(self, digest: Digest, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...
    def put(self, digest: Digest, data: bytes) -> None:
        """Store small content whose digest the caller has verified (manifests are in metadata)."""
        ...

    def delete(self, digest: Digest) -> None: ...
    def iter_digests(self) -> Iterable[Digest]: ...


class UploadStore(Protocol):
    """Partial upload data, appended in order, committed into the BlobStore after verification."""

    def create(self, session_id: str) -> None: ...
    async def append(self, session_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Append a stream at ``offset`` (must equal the current size, else UploadConflict); return the new size."""
        ...

    def current_size(self, session_id: str) -> int | None: ...
    async def commit(self, session_id: str, expected: Digest) -> int:
        """Verify the whole upload hashes to ``expected``, move it into the BlobStore, return its size.

        Raises ValueError (digest mismatch) and leaves the session intact."""
        ...

    def discard(self, session_id: str) -> None: ...

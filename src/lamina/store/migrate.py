"""Copy an embedded registry (SQLite + files under a root) into shared storage (PostgreSQL + S3):
the engine of ``lamina registry migrate --from ROOT --to CONFIG``.

What is copied: every linked blob, every blob link (repository, digest, size), every manifest with its
references, subject, annotations, push and pull times, and every tag. Not copied: open upload sessions
(clients restart them), blob files nothing links (garbage), verification records (the target re-hashes
on its own terms). Settings (auth, immutable tags, lifecycle rules) live in the config file, not here.

**Verified.** A blob is streamed from its file into the target's upload store and committed there,
which re-hashes the bytes as they arrive and refuses a digest that does not match
(:meth:`lamina.store.s3uploads.S3UploadStore.commit`): a corrupt source file is reported, never copied.
A manifest's bytes are checked against its digest before they are written, and read back after.

**Resumable.** Every step is idempotent and skipped when already done: a blob already in the target
with the right size (S3 makes an object visible only whole), a link with the right size, a manifest
already stored with its tags. A run that was interrupted (killed, a network failure) is continued by
running it again; nothing is copied twice.

**Refusals.** The target must be empty, or hold a previous migrate of the *same* source: a marker
object (``<prefix>/lamina-migrate.json`` in the bucket, naming the source root's real path) is
written before anything else. ``force`` copies into any target (what is there stays; same digests
are skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.oci import Digest, parse_digest

from .base import ManifestRecord, ManifestReference, StoreError
from .views import ManifestInfo

if TYPE_CHECKING:
    from . import Storage

__all__ = ["MARKER", "MigrateResult", "Migration", "MigrationRefused"]

MARKER = "lamina-migrate.json"
Progress = Callable[[str], None]


class MigrationRefused(StoreError):
    """The target holds a registry that is not a previous migrate of this source (use force)."""


@dataclass
class MigrateResult:
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_present: int = 0
    links_created: int = 0
    manifests_copied: int = 0
    manifests_present: int = 0
    tags_set: int = 0
    repositories: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "every digest verified" if not self.failures else f"{len(self.failures)} FAILURE(S)"
        return (
            f"migrate: {self.repositories} repositories; blobs: {self.blobs_copied} copied "
            f"({self.bytes_copied / 1e6:.1f} MB), {self.blobs_present} already there; links: {self.links_created} "
            f"created; manifests: {self.manifests_copied} copied, {self.manifests_present} already there; "
            f"tags: {self.tags_set} set; {verdict}"
        )


class Migration:
    """One run from ``source`` (an embedded :class:`lamina.store.Storage`) into ``target`` (S3 blobs and
    PostgreSQL metadata). ``run()`` is a coroutine: blob copies stream, ``parallel`` at a time."""

    def __init__(self, source: Storage, target: Storage, *, source_root: Path, force: bool = False,
                 parallel: int = 4, progress: Progress = lambda line: None) -> None:
        from .s3blobs import S3BlobStore

        if not isinstance(target.blobs, S3BlobStore):
            raise StoreError("migrate: the target config sets no blobs = \"s3://...\": nothing to migrate into")
        self.source = source
        self.target = target
        self.s3 = target.blobs
        self.source_root = Path(os.path.realpath(source_root))
        self.force = force
        self.parallel = parallel
        self.progress = progress
        self.result = MigrateResult()
        self.failed_blobs: set[str] = set()  # digests not copied: their links and manifests are not either

    # -- the marker ---------------------------------------------------------------------------------

    def _marker_key(self) -> str:
        return self.s3.location.key(MARKER)

    def _read_marker(self) -> dict[str, object] | None:
        from .s3client import is_missing

        blobs = self.s3
        try:
            body = blobs.client.s3.get_object(Bucket=blobs.location.bucket, Key=self._marker_key())["Body"]
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        try:
            found = json.loads(body.read())
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def _target_empty(self) -> bool:
        if self.target.metadata.list_repositories(None, 1):
            return False
        return next(iter(self.target.blobs.iter_digests()), None) is None

    def check_target(self) -> None:
        """MigrationRefused unless the target is empty, a previous migrate of this source, or ``force``."""
        marker = self._read_marker()
        if marker is not None and marker.get("source") == str(self.source_root):
            started = time.gmtime(float(str(marker.get("started", 0))))
            self.progress(f"migrate: continuing the migrate of {self.source_root} started "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', started)}: what is done is skipped")
            return
        if self.force or self._target_empty():
            data = json.dumps({"source": str(self.source_root), "started": time.time()}).encode()
            blobs = self.s3
            blobs.client.s3.put_object(Bucket=blobs.location.bucket, Key=self._marker_key(), Body=data)
            return
        other = f"a migrate of {marker.get('source')}" if marker else "a registry lamina did not migrate here"
        raise MigrationRefused(
            f"migrate: the target already holds {other}, not a migrate of {self.source_root}; "
            "use --force to copy into it anyway (existing content is kept)"
        )

    # -- blobs --------------------------------------------------------------------------------------

    async def _copy_blob(self, digest: Digest, size: int, index: int, total: int) -> None:
        target = self.target
        found = await asyncio.to_thread(target.blobs.size, digest)
        if found == size:
            self.result.blobs_present += 1
            return
        session = f"migrate-{uuid.uuid4().hex}"
        await asyncio.to_thread(target.uploads.create, session)
        try:
            written = await target.uploads.append(session, 0, self.source.blobs.read(digest))
            if written != size:
                raise ValueError(f"the source file has {written} bytes, its links say {size}")
            await target.uploads.commit(session, digest)  # re-hashed as it streamed: ValueError on mismatch
        except (ValueError, StoreError, OSError) as exc:
            await asyncio.to_thread(target.uploads.discard, session)
            self.failed_blobs.add(str(digest))
            self.result.failures.append(f"blob {digest}: {exc}")
            self.progress(f"migrate: blob {index}/{total} {digest} NOT copied: {exc}")
            return
        self.result.blobs_copied += 1
        self.result.bytes_copied += size
        self.progress(f"migrate: blob {index}/{total} {digest} copied ({size} bytes, digest verified)")

    async def _copy_blobs(self, sizes: dict[str, int]) -> None:
        limit = asyncio.Semaphore(self.parallel)
        total = len(sizes)

        async def one(index: int, digest: str, size: int) -> None:
            async with limit:
                await self._copy_blob(parse_digest(digest), size, index, total)

        self.progress(f"migrate: copying {total} blob(s), {sum(sizes.values()) / 1e6:.1f} MB")
        await asyncio.gather(*(one(i, d, s) for i, (d, s) in enumerate(sorted(sizes.items()), 1)))

    # -- metadata -----------------------------------------------------------------------------------

    def _copy_links(self, links: dict[str, list[tuple[str, int]]], failed: set[str]) -> None:
        meta, blobs = self.target.metadata, self.target.blobs
        for digest, holders in sorted(links.items()):
            if digest in failed:
                continue
            parsed = parse_digest(digest)
            for repository, size in holders:
                if meta.linked_blob_size(repository, parsed) == size:
                    continue
                meta.link_blob(repository, parsed, size, lambda d=parsed, s=size: blobs.size(d) == s)
                self.result.links_created += 1

    def _copy_repository(self, repository: str) -> None:
        infos = {info.digest: info for info in self.source.metadata.manifest_infos(repository)}
        done: set[str] = set()
        pending = sorted(infos)
        while pending:  # children (index entries) before the indexes listing them
            ready = [d for d in pending
                     if all(r.digest in done or r.digest not in infos for r in infos[d].references if r.is_manifest)]
            if not ready:
                ready = pending  # a cycle cannot be pushed; let put_manifest report what is missing
            for digest in ready:
                self._copy_manifest(infos[digest])
                done.add(digest)
            pending = [d for d in pending if d not in done]

    def _copy_manifest(self, info: ManifestInfo) -> None:
        meta = self.target.metadata
        where = f"{info.repository}@{info.digest}"
        record = self.source.metadata.get_manifest(info.repository, info.digest)
        if record is None:  # deleted in the source since the listing
            return
        digest = parse_digest(info.digest)
        if not digest.verify(record.content):
            self.result.failures.append(f"manifest {where}: its stored bytes do not match the digest")
            self.progress(f"migrate: manifest {where} NOT copied: its stored bytes do not match the digest")
            return
        references = [ManifestReference(parse_digest(r.digest), r.size, r.is_manifest) for r in info.references]
        existing = meta.get_manifest(info.repository, info.digest)
        tags = [t for t in info.tags if (found := meta.get_manifest(info.repository, t)) is None
                or found.digest != digest]
        if existing is not None and not tags:
            self.result.manifests_present += 1
            return
        clean = ManifestRecord(
            repository=record.repository, digest=record.digest, media_type=record.media_type,
            content=record.content, kind=record.kind, artifact_type=record.artifact_type, subject=record.subject,
            annotations_json=record.annotations_json, pushed_at=record.pushed_at,
            last_pulled_at=record.last_pulled_at,
        )
        try:
            meta.put_manifest(clean, references, None)
            for tag in tags:
                meta.put_manifest(clean, references, tag)
        except StoreError as exc:
            self.result.failures.append(f"manifest {where}: {exc}")
            self.progress(f"migrate: manifest {where} NOT copied: {exc}")
            return
        stored = meta.get_manifest(info.repository, info.digest)
        if stored is None or stored.content != record.content:
            self.result.failures.append(f"manifest {where}: reads back differently from the target")
            return
        if existing is None:
            self.result.manifests_copied += 1
        else:
            self.result.manifests_present += 1
        self.result.tags_set += len(tags)

    # -- the run ------------------------------------------------------------------------------------

    async def run(self) -> MigrateResult:
        await asyncio.to_thread(self.check_target)
        snapshot = await asyncio.to_thread(self.source.metadata.snapshot)
        sizes: dict[str, int] = {}
        for digest, holders in snapshot.links.items():
            sizes[digest] = holders[0][1]
        await self._copy_blobs(sizes)
        self.progress(f"migrate: linking blobs in {len({r for h in snapshot.links.values() for r, _ in h})} "
                      "repositories")
        await asyncio.to_thread(self._copy_links, snapshot.links, self.failed_blobs)
        repositories = sorted({repository for repository, _ in snapshot.manifests}
                              | {r for h in snapshot.links.values() for r, _ in h})
        self.result.repositories = len(repositories)
        for index, repository in enumerate(repositories, 1):
            await asyncio.to_thread(self._copy_repository, repository)
            self.progress(f"migrate: repository {index}/{len(repositories)} {repository} copied")
        return self.result

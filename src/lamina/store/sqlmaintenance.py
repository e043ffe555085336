"""The maintenance roles (garbage collection, inventory, lifecycle, health, verification records, fsck's
snapshot and repairs) over any SQL backend's primitives (:mod:`.sqlcore`).

Whole-registry reads run in one read-only snapshot transaction (they never block a writer and never see
half a push). Every change here that competes with garbage collection or a push takes the GC gate
``exclusive``: on SQLite that is the ``BEGIN IMMEDIATE`` write lock every writer takes anyway; on
PostgreSQL an advisory lock that manifest PUTs and upload commits take ``shared``. The file work each
repair must do atomically with its database change runs in the caller's callback, inside the transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lamina.oci import Digest

from .sqlcore import SqlCore
from .views import Garbage, ManifestInfo, Reference, RepositoryInfo, Snapshot

__all__ = ["MaintenanceQueries"]

Identity = tuple[int, int, int, int]


class _Rollback(Exception):
    """Raised inside a transaction to discard it (a dry run); carries the result out."""

    def __init__(self, result: Any) -> None:
        super().__init__("rolled back")
        self.result = result


class MaintenanceQueries(SqlCore):
    """GcQueries, Inventory, Lifecycle, Health, VerificationRecords and Repairs (:mod:`.roles`)."""

    def _consistency_errors(self, conn: Any) -> list[str]:
        """The database's own check of its files, in a snapshot (SQLite: ``quick_check``)."""
        return []

    # -- garbage collection ---------------------------------------------------------------------------

    def collect_garbage(self, cutoff: float, *, delete_untagged: bool, commit: bool) -> Garbage:
        sql = self.sql

        def run(conn: Any) -> Garbage:
            found = Garbage()
            while delete_untagged:  # repeatedly: an untagged index's children become untagged orphans
                rows = self._exec(conn, sql.gc_untagged, cutoff=cutoff).fetchall()
                if not rows:
                    break
                for name, digest, size in rows:
                    self._exec(conn, sql.delete_manifest, repository=name, digest=digest)
                    found.untagged.append((name, digest, int(size)))
            found.links = [(r, d, int(s)) for r, d, s in self._exec(conn, sql.gc_stale_links, cutoff=cutoff)]
            self._exec(conn, sql.gc_delete_stale_links, cutoff=cutoff)
            found.live = {row[0] for row in self._exec(conn, sql.gc_live_digests)}
            if not commit:
                raise _Rollback(found)
            return found

        try:
            return self._write(run, gate="exclusive")
        except _Rollback as rolled_back:
            return rolled_back.result  # type: ignore[no-any-return]

    @contextmanager
    def sweep_guard(self) -> Iterator[Callable[[str], bool]]:
        """An exclusive transaction for the ``with`` body: no link is created while it deletes files."""
        with self._transaction(gate="exclusive") as conn:
            yield lambda digest: bool(self._exec(conn, self.sql.gc_is_live, digest=digest).fetchone()[0])

    # -- inventory and lifecycle ----------------------------------------------------------------------

    def repository_infos(self) -> list[RepositoryInfo]:
        def run(conn: Any) -> tuple[dict[str, int], list[Any]]:
            blob_bytes = {row[0]: int(row[1] or 0) for row in self._exec(conn, self.sql.inv_repo_blob_bytes)}
            return blob_bytes, self._exec(conn, self.sql.inv_repos).fetchall()

        blob_bytes, rows = self._snapshot(run)
        return [
            RepositoryInfo(name, int(count), int(tag_count), int(manifest_bytes) + blob_bytes.get(name, 0), last)
            for name, count, tag_count, last, manifest_bytes in rows
        ]

    def manifest_infos(self, repository: str) -> list[ManifestInfo]:
        def run(conn: Any) -> tuple[list[Any], dict[str, list[str]], dict[str, list[Reference]]]:
            rows = self._exec(conn, self.sql.inv_manifests, repository=repository).fetchall()
            tag_map: dict[str, list[str]] = defaultdict(list)
            for digest, tag in self._exec(conn, self.sql.inv_tags, repository=repository):
                tag_map[digest].append(tag)
            ref_map: dict[str, list[Reference]] = defaultdict(list)
            for manifest, target, size, is_manifest in self._exec(conn, self.sql.inv_refs, repository=repository):
                ref_map[manifest].append(Reference(target, int(size), bool(is_manifest)))
            return rows, tag_map, ref_map

        rows, tag_map, ref_map = self._snapshot(run)
        infos = [
            ManifestInfo(repository, digest, media_type, kind, artifact_type, subject, int(size), pushed, pulled,
                         tuple(sorted(tag_map.get(digest, ()))), tuple(ref_map.get(digest, ())))
            for digest, media_type, kind, artifact_type, subject, size, pushed, pulled in rows
        ]
        return sorted(infos, key=lambda m: (-m.pushed_at, m.digest))

    def storage_totals(self) -> dict[str, int]:
        blobs, size, repos, manifest_count, uploads = self._fetch(self.sql.inv_totals)[0]
        return {
            "storage_blobs": int(blobs),
            "storage_bytes": int(size),
            "repositories": int(repos),
            "manifests": int(manifest_count),
            "upload_sessions_open": int(uploads),
        }

    def delete_manifest_if_unchanged(self, repository: str, digest: str, expected_tags: Sequence[str]) -> bool:
        """The manifest is locked first (a tag moving onto it waits on its foreign key), then its tags read."""
        params = {"repository": repository, "digest": digest}

        def run(conn: Any) -> bool:
            if self._exec(conn, self.sql.lock_manifest, **params).fetchone() is None:
                return False
            current = sorted(tag for d, tag in self._exec(conn, self.sql.inv_tags, repository=repository)
                             if d == digest)
            if current != sorted(expected_tags):
                return False
            return int(self._exec(conn, self.sql.delete_if_unchanged, **params).rowcount) > 0

        return self._write(run)

    def health_problem(self) -> str | None:
        try:
            self._fetch(self.sql.ping)
        except Exception as exc:  # the driver's errors, already StoreError from _fetch
            return f"metadata database {self.describe()}: {exc}"
        return None

    # -- verification records -------------------------------------------------------------------------

    def is_verified(self, digest: Digest, identity: Identity) -> bool:
        row = self._fetch_one(self.sql.checked, digest=str(digest))
        return row is not None and tuple(int(v) for v in row) == tuple(identity)

    def record_verified(self, digest: Digest, identity: Identity) -> None:
        inode, size, mtime_ns, ctime_ns = identity
        values = {"digest": str(digest), "inode": inode, "size": size, "mtime_ns": mtime_ns,
                  "ctime_ns": ctime_ns, "now": time.time()}
        self._write(lambda conn: self._exec(conn, self.sql.record_check, **values))

    def forget_check(self, digest: Digest) -> None:
        self._write(lambda conn: self._exec(conn, self.sql.forget_check, digest=str(digest)))

    def forget_checks(self, gone: Callable[[str], bool]) -> int:
        def run(conn: Any) -> int:
            stale = [digest for (digest,) in self._exec(conn, self.sql.checked_digests).fetchall() if gone(digest)]
            for digest in stale:
                self._exec(conn, self.sql.forget_check, digest=digest)
            return len(stale)

        return self._write(run, gate="exclusive")

    # -- fsck: snapshot and repairs -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Links, references, manifests (each re-hashed) and tags in one read-only snapshot."""

        def run(conn: Any) -> Snapshot:
            snap = Snapshot(database_errors=self._consistency_errors(conn))
            for repository, digest, size in self._exec(conn, self.sql.all_links):
                snap.links[digest].append((repository, int(size)))
            snap.refs = [(r, m, t, int(s), bool(i)) for r, m, t, s, i in self._exec(conn, self.sql.all_refs)]
            for repository, digest, content in self._exec(conn, self.sql.all_manifests):
                snap.manifests.add((repository, digest))
                algorithm = digest.partition(":")[0]
                actual = f"{algorithm}:{hashlib.new(algorithm, bytes(content)).hexdigest()}"
                if actual != digest:
                    snap.corrupt_manifests.append((repository, digest, actual))
            for repository, digest, tag in self._exec(conn, self.sql.all_tags):
                snap.tags[(repository, digest)].append(tag)
            return snap

        return self._snapshot(run)

    def drop_blob_links(self, digest: Digest, act: Callable[[], bool]) -> list[str] | None:
        def run(conn: Any) -> list[str] | None:
            if not act():
                return None
            linked = sorted(name for name, _ in self._exec(conn, self.sql.linked_in, digest=str(digest)))
            self._exec(conn, self.sql.delete_links, digest=str(digest))
            self._exec(conn, self.sql.forget_check, digest=str(digest))
            return linked

        return self._write(run, gate="exclusive")

    def fix_link_size(self, digest: Digest, size: int, still: Callable[[], bool]) -> int:
        def run(conn: Any) -> int:
            if not still():
                return 0
            return int(self._exec(conn, self.sql.fix_size, digest=str(digest), size=size).rowcount)

        return self._write(run, gate="exclusive")

    def relink(self, repository: str, manifest: str, digest: Digest, size: int, still: Callable[[], bool]) -> bool:
        def run(conn: Any) -> bool:
            if self._exec(conn, self.sql.manifest_content, repository=repository, digest=manifest).fetchone() is None:
                return False
            if not still():
                return False
            params = {"repository": repository, "digest": str(digest), "size": size, "now": time.time()}
            return int(self._exec(conn, self.sql.insert_link, **params).rowcount) > 0

        return self._write(run, gate="exclusive")

    def remove_manifest(self, repository: str, digest: str, act: Callable[[bytes, list[str]], bool]) -> bool:
        params = {"repository": repository, "digest": digest}

        def run(conn: Any) -> bool:
            row = self._exec(conn, self.sql.manifest_content, **params).fetchone()
            if row is None:
                return False
            tag_names = sorted(tag for (tag,) in self._exec(conn, self.sql.manifest_tags, **params))
            if not act(bytes(row[0]), tag_names):
                return False
            self._exec(conn, self.sql.delete_manifest, **params)
            return True

        return self._write(run, gate="exclusive")

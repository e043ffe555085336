"""``lamina registry fsck``: re-hash every blob and check the database against the files, both ways.

What counts as a problem (each reported with the manifests and tags it affects):

- ``corrupt-blob``: a blob file whose bytes do not hash to its name;
- ``missing-blob``: a digest the database links or a manifest references, with no file;
- ``size-mismatch``: a link (or a manifest's descriptor) whose size is not the file's;
- ``unlinked-reference``: a manifest references a blob its repository has no link to (the layer
  answers 404 while the manifest answers 200);
- ``missing-child``: an index lists a manifest its repository does not have;
- ``corrupt-manifest``: manifest bytes in the database that do not hash to their digest;
- ``stray-file``: something under ``blobs/`` that is not a blob file;
- ``database``: what SQLite's ``PRAGMA quick_check`` finds.

With S3 blobs (``blobs = "s3://..."``) the objects are listed (their identities from the listing) and
re-hashed as they stream, :attr:`~lamina.store.s3check.S3CheckBlobs.parallel` at once
(:mod:`lamina.store.s3check`), and ``repair`` quarantines inside the bucket
(:mod:`lamina.store.s3integrity`); the metadata may be SQLite or PostgreSQL alike. Keys under
``blobs/`` that are not digests are not reported (the registry never writes one).

Blob files nothing links or references are not a problem: they are garbage the next GC reclaims
(counted in the summary). Without ``repair`` nothing is written: the database is read through a
read-only connection in one read transaction, so a serving registry is never blocked. Findings are
confirmed against a second read of the database and a fresh ``stat`` before they are reported, so a
push or GC between the scan and the report does not show up as a problem. With ``repair`` the run
holds GC's lock (``ROOT/gc.lock``, waiting for a running GC) and each repair re-checks its problem
under the database write lock (:mod:`lamina.store.integrity`).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.oci import Digest, parse_digest
from lamina.store import (
    FilesystemBlobStore,
    MetadataStore,
    SqliteMetadataStore,
    Storage,
    StorePaths,
    open_storage,
)
from lamina.store.filesystem import BlobCheck, FileIdentity
from lamina.store.integrity import BlobPlace, LocalBlobPlace, quarantine_file
from lamina.store.roles import Repairs
from lamina.store.s3blobs import S3BlobStore
from lamina.store.s3check import S3CheckBlobs
from lamina.store.s3integrity import S3BlobPlace
from lamina.store.s3uploads import open_s3
from lamina.store.views import Snapshot

from .gc import GcBusy, gc_lock

__all__ = ["Affected", "FsckReport", "Problem", "format_report", "report_json", "run_fsck"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, order=True)
class Affected:
    repository: str
    manifest: str | None  # None: the blob is only linked there (pushed, no manifest uses it)
    tags: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.manifest is None:
            return f"{self.repository} (linked, no manifest uses it)"
        tags = f" (tags: {', '.join(self.tags)})" if self.tags else " (untagged)"
        return f"{self.repository}@{self.manifest}{tags}"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    subject: str  # a digest, a path, or repository@digest
    message: str
    affects: tuple[Affected, ...] = ()
    repair: str | None = None  # what --repair did; None when nothing was (or could be) done

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.subject, self.message


@dataclass
class FsckReport:
    blobs_checked: int = 0
    bytes_checked: int = 0
    manifests_checked: int = 0
    repositories: int = 0
    unreferenced_blobs: int = 0
    unreferenced_bytes: int = 0
    stale_checks_dropped: int = 0  # --repair: verification records of blobs no longer stored
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class _Files:
    present: dict[str, FileIdentity] = field(default_factory=dict)  # every blob file, good or corrupt
    corrupt: dict[str, BlobCheck] = field(default_factory=dict)
    strays: list[Path] = field(default_factory=list)


class _Throttle:
    """Progress lines at most once a second (and always the last one)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.last = progress, 0.0

    def __call__(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= 1.0:
            self.last = now
            self.progress(line)


def _listing(blobs: FilesystemBlobStore | S3CheckBlobs, files: _Files) -> list[tuple[Digest, int]]:
    """Every blob with its size (strays noted in ``files``): S3's listing gives sizes, files are stat'ed."""
    if isinstance(blobs, S3CheckBlobs):
        return [(digest, identity.size) for _, digest, identity in blobs.iter_objects()]
    valid: list[tuple[Digest, int]] = []
    for path, digest in blobs.iter_files():
        if digest is None:
            files.strays.append(Path(path))
            continue
        identity = blobs.identity(digest)  # None: collected by GC since the listing
        if identity is not None:
            valid.append((digest, identity.size))
    return valid


def _scan_files(blobs: FilesystemBlobStore | S3CheckBlobs, progress: _Throttle) -> _Files:
    files = _Files()
    valid = _listing(blobs, files)
    total = sum(size for _, size in valid)
    progress(f"fsck: re-hashing {len(valid)} blob(s), {total / 1e6:.1f} MB", force=True)
    done = 0
    with ThreadPoolExecutor(getattr(blobs, "parallel", 1), thread_name_prefix="lamina-fsck") as pool:
        checks = pool.map(lambda item: blobs.check(item[0]), valid)  # in order, at most `parallel` at once
        for index, ((digest, size), check) in enumerate(zip(valid, checks, strict=True), 1):
            done += size
            if check is not None:  # None: collected by GC since the listing
                files.present[str(digest)] = check.identity
                if not check.ok:
                    files.corrupt[str(digest)] = check
            progress(f"fsck: {index}/{len(valid)} blob(s) re-hashed ({done / 1e6:.1f}/{total / 1e6:.1f} MB)",
                     force=index == len(valid))
    return files


def _refresh(blobs: FilesystemBlobStore | S3CheckBlobs, snap: Snapshot, files: _Files) -> _Files:
    """The files as they are now, for the digests the second snapshot names: a blob uploaded since the
    scan counts as good (uploads are verified when committed); a corrupt one stays corrupt only while it
    is the same file."""
    fresh = _Files(strays=[path for path in files.strays if path.exists() or path.is_symlink()])
    wanted = set(snap.links) | {target for _, _, target, _, is_manifest in snap.refs if not is_manifest}
    for digest in wanted | set(files.present):
        identity = blobs.identity(parse_digest(digest))
        if identity is None:
            continue
        fresh.present[digest] = identity
        check = files.corrupt.get(digest)
        if check is not None and check.identity == identity:
            fresh.corrupt[digest] = check
    return fresh


def _find(snap: Snapshot, files: _Files) -> dict[tuple[str, str, str], Problem]:
    """Every problem in this view of the database and the files (no repairs)."""
    users: dict[str, set[tuple[str, str]]] = defaultdict(set)  # blob digest -> (repository, manifest)
    for repository, manifest, target, _, is_manifest in snap.refs:
        if not is_manifest:
            users[target].add((repository, manifest))

    def affects(digest: str) -> tuple[Affected, ...]:
        found = {Affected(r, m, tuple(sorted(snap.tags.get((r, m), ())))) for r, m in users.get(digest, ())}
        used_in = {r for r, _ in users.get(digest, ())}
        found |= {Affected(r, None) for r, _ in snap.links.get(digest, ()) if r not in used_in}
        return tuple(sorted(found, key=lambda a: (a.repository, a.manifest or "")))

    problems: list[Problem] = [Problem("database", "metadata.db", f"SQLite quick_check: {line}")
                               for line in snap.database_errors[:20]]
    for digest, check in sorted(files.corrupt.items()):
        problems.append(Problem("corrupt-blob", digest,
                                f"the {check.identity.size} stored bytes hash to {check.actual}", affects(digest)))
    for digest in sorted(set(snap.links) | set(users)):
        if digest not in files.present:
            problems.append(Problem("missing-blob", digest, "no blob file", affects(digest)))
    for digest, links in sorted(snap.links.items()):
        identity = files.present.get(digest)
        if identity is None or digest in files.corrupt:
            continue
        wrong = sorted(f"{repository} as {size}" for repository, size in links if size != identity.size)
        if wrong:  # one problem per blob: one repair fixes every link
            problems.append(Problem("size-mismatch", digest,
                                    f"linked in {', '.join(wrong)} bytes, the file has {identity.size}",
                                    affects(digest)))
    linked = {(repository, digest) for digest, links in snap.links.items() for repository, _ in links}
    for repository, manifest, target, size, is_manifest in sorted(snap.refs):
        tags = tuple(sorted(snap.tags.get((repository, manifest), ())))
        owner = (Affected(repository, manifest, tags),)
        if is_manifest:
            if (repository, target) not in snap.manifests:
                problems.append(Problem("missing-child", f"{repository}@{target}",
                                        f"listed by {repository}@{manifest}, not in the repository", owner))
            continue
        identity = files.present.get(target)
        if identity is None or target in files.corrupt:
            continue  # reported above, with this manifest among those affected
        if size != identity.size:
            problems.append(Problem("size-mismatch", target,
                                    f"{repository}@{manifest} declares {size} bytes, the file has {identity.size}",
                                    owner))
        elif (repository, target) not in linked:
            problems.append(Problem("unlinked-reference", target,
                                    f"{repository}@{manifest} uses it but {repository} has no link to it", owner))
    for repository, digest, actual in sorted(snap.corrupt_manifests):
        tags = tuple(sorted(snap.tags.get((repository, digest), ())))
        problems.append(Problem("corrupt-manifest", f"{repository}@{digest}", f"its stored bytes hash to {actual}",
                                (Affected(repository, digest, tags),)))
    for path in sorted(files.strays):
        problems.append(Problem("stray-file", str(path), "not a blob file (name or type) under blobs/"))
    return {problem.key: problem for problem in problems}


def _repair(repairs: Repairs, place: BlobPlace, paths: StorePaths, problem: Problem, files: _Files) -> str | None:
    """Fix one confirmed problem; what was done, or None when nothing can be done here."""
    if problem.kind == "corrupt-blob":
        check = files.corrupt[problem.subject]
        note = {"actual": check.actual, "affects": [str(a) for a in problem.affects]}
        target = place.quarantine_blob(repairs, check.digest, check.identity, "fsck: " + problem.message, note)
        return f"quarantined to {target}; push it again" if target else None
    if problem.kind == "missing-blob":
        dropped = place.drop_links(repairs, parse_digest(problem.subject))
        return f"dropped its link(s) from {', '.join(dropped)}; push it again" if dropped else None
    if problem.kind == "size-mismatch" and problem.message.startswith("linked in "):
        identity = files.present[problem.subject]
        changed = place.fix_link_size(repairs, parse_digest(problem.subject), identity)
        return f"recorded size set to the file's {identity.size} bytes" if changed else None
    if problem.kind == "unlinked-reference":
        owner = problem.affects[0]
        digest = parse_digest(problem.subject)
        size = files.present[problem.subject].size
        if owner.manifest is not None and place.relink(repairs, owner.repository, owner.manifest, digest, size):
            return f"linked it into {owner.repository} again"
        return None
    if problem.kind == "corrupt-manifest":
        repository, _, digest = problem.subject.partition("@")
        target = place.quarantine_manifest(repairs, repository, digest, "fsck: " + problem.message)
        return f"quarantined to {target} and deleted with its tags; push it again" if target else None
    if problem.kind == "stray-file":
        path = Path(problem.subject)
        if path.exists() or path.is_symlink():
            return f"quarantined to {quarantine_file(paths, path, 'fsck: ' + problem.message)}"
    return None


@contextlib.contextmanager
def _gc_lock_waiting(storage: Storage, progress: Progress) -> Iterator[None]:
    """GC's lock, waiting (with one progress line) while a garbage collection holds it."""
    said = False
    while True:
        try:
            with gc_lock(storage):
                yield
            return
        except GcBusy:
            if not said:
                progress("fsck: waiting for the running garbage collection to finish")
                said = True
            time.sleep(0.5)


def run_fsck(
    paths: StorePaths,
    *,
    repair: bool = False,
    progress: Progress = lambda line: None,
    metadata: str | None = None,
    blobs: str | None = None,
) -> FsckReport:
    """Check the root at ``paths`` (its database must exist); blocking, for a command or a thread.

    Read-only unless ``repair``; then the storage is opened as a server opens it (which creates any
    table this version adds) and the run holds GC's lease. ``metadata``: the registry's PostgreSQL URL
    (None: ``root/metadata.db``); ``blobs``: its S3 location (None: ``root/blobs``), re-hashed through
    :mod:`lamina.store.s3check` and repaired through :mod:`lamina.store.s3integrity`."""
    if not repair:
        store: MetadataStore
        if metadata is not None:
            from lamina.store.postgres import PostgresMetadataStore

            store = PostgresMetadataStore(metadata)  # snapshots only: read-only transactions
        else:
            store = SqliteMetadataStore(paths.metadata_db)  # snapshots only: read-only connections
        checked: S3CheckBlobs | None = None
        if blobs is not None:
            checked = S3CheckBlobs(open_s3(blobs)[0])
        try:
            return _run(store, paths, repair=False, progress=progress, blobs=checked)
        finally:
            store.close()
    storage = open_storage(paths.root, metadata=metadata, blobs=blobs)
    try:
        with _gc_lock_waiting(storage, progress):
            if isinstance(storage.blobs, S3BlobStore):
                return _run(storage.metadata, storage.paths, repair=True, progress=progress,
                            blobs=S3CheckBlobs(storage.blobs), place=S3BlobPlace(storage.blobs))
            return _run(storage.metadata, storage.paths, repair=True, progress=progress)
    finally:
        storage.close()


def _run(
    metadata: MetadataStore, paths: StorePaths, *, repair: bool, progress: Progress,
    blobs: FilesystemBlobStore | S3CheckBlobs | None = None, place: BlobPlace | None = None,
) -> FsckReport:
    throttle = _Throttle(progress)
    throttle("fsck: reading the database", force=True)
    blobs = blobs or FilesystemBlobStore(paths)
    place = place or LocalBlobPlace(paths)
    first = metadata.snapshot()
    files = _scan_files(blobs, throttle)
    found = _find(first, files)
    if found:  # confirm: what a push or GC changed meanwhile is not a problem
        second = metadata.snapshot()
        files = _refresh(blobs, second, files)
        confirmed = _find(second, files)
        found = {key: problem for key, problem in found.items() if key in confirmed}
    else:
        second = first
    report = FsckReport(
        blobs_checked=len(files.present),
        bytes_checked=sum(identity.size for identity in files.present.values()),
        manifests_checked=len(second.manifests),
        repositories=len({r for r, _ in second.manifests} | {r for links in second.links.values() for r, _ in links}),
    )
    wanted = set(second.links) | {target for _, _, target, _, is_manifest in second.refs if not is_manifest}
    garbage = [identity.size for digest, identity in files.present.items() if digest not in wanted]
    report.unreferenced_blobs, report.unreferenced_bytes = len(garbage), sum(garbage)
    for problem in found.values():
        if repair:
            problem = Problem(problem.kind, problem.subject, problem.message, problem.affects,
                              _repair(metadata, place, paths, problem, files))
        report.problems.append(problem)
    if repair:
        report.stale_checks_dropped = place.forget_stale_checks(metadata)
    return report


def format_report(report: FsckReport, *, repair: bool) -> list[str]:
    """Human lines: one per problem, then the summary."""
    lines = []
    for p in report.problems:
        line = f"{p.kind} {p.subject}: {p.message}"
        if p.affects:
            line += f"; affects {', '.join(str(a) for a in p.affects)}"
        if repair:
            line += f"; {p.repair}" if p.repair else "; not repaired"
        lines.append(line)
    kinds: dict[str, int] = defaultdict(int)
    for p in report.problems:
        kinds[p.kind] += 1
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no problems"
    repaired = f", {sum(1 for p in report.problems if p.repair)} repaired" if repair and report.problems else ""
    lines.append(
        f"fsck: {report.blobs_checked} blob(s) re-hashed ({report.bytes_checked} bytes), "
        f"{report.manifests_checked} manifest(s) in {report.repositories} repositor(ies): {found}{repaired}; "
        f"{report.unreferenced_blobs} unreferenced blob(s) ({report.unreferenced_bytes} bytes) left for gc"
    )
    if report.stale_checks_dropped:
        lines.append(f"fsck: dropped {report.stale_checks_dropped} verification record(s) of blobs no longer stored")
    if report.problems and not repair:
        lines.append("fsck: run `lamina registry fsck --repair` to quarantine what is corrupt and fix the index")
    return lines


def report_json(report: FsckReport) -> dict[str, Any]:
    return {
        "clean": report.clean,
        "blobs_checked": report.blobs_checked,
        "bytes_checked": report.bytes_checked,
        "manifests_checked": report.manifests_checked,
        "repositories": report.repositories,
        "unreferenced_blobs": report.unreferenced_blobs,
        "unreferenced_bytes": report.unreferenced_bytes,
        "stale_checks_dropped": report.stale_checks_dropped,
        "problems": [
            {"kind": p.kind, "subject": p.subject, "message": p.message, "repair": p.repair,
             "affects": [{"repository": a.repository, "manifest": a.manifest, "tags": list(a.tags)}
                         for a in p.affects]}
            for p in report.problems
        ],
    }

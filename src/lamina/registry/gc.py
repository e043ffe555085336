"""Online garbage collection: ``lamina registry gc [--dry-run]`` and the background schedule.

Deletes blobs that no manifest in any repository references (layers, configs, index children, legacy
BuildKit cache children are all recorded as references at PUT time) and, when ``delete_untagged`` is
on, untagged manifests that are neither an index's child nor a referrer of a live subject. Runs while
pushes continue; the race protocol lives in :mod:`lamina.store.sweep`. One GC at a time per registry,
whatever process or replica starts it: the metadata backend's ``gc`` lease (:mod:`lamina.store.leases`:
``ROOT/gc.lock`` with SQLite, an advisory lock with PostgreSQL); a second one reports that it is busy
and does nothing. Blob files are swept through :class:`~lamina.store.sweep.FilesystemSweepBlobs`, S3
objects through :class:`~lamina.store.s3sweep.S3SweepBlobs`.

::

    [gc]
    grace_seconds = 3600        # blobs linked/uploaded and manifests pushed more recently are kept
    interval_seconds = 0        # > 0: run in the server every this many seconds (worker 0 only)
    delete_untagged = false     # also delete untagged manifests (not index children, not referrers)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lamina.store import Storage
from lamina.store.leases import Lease
from lamina.store.sweep import FilesystemSweepBlobs, SweepBlobs, SweepResult, sweep

from .background import Offloader, repeat_until_stopped
from .settingerror import ConfigError

__all__ = ["GcBusy", "GcSettings", "format_report", "gc_forever", "parse_gc", "run_gc", "sweep_blobs"]

log = logging.getLogger("lamina.registry.gc")


class GcBusy(Exception):
    """Another garbage collection holds the root's GC lock."""


@dataclass(frozen=True, slots=True)
class GcSettings:
    grace_seconds: float = 3600.0
    interval_seconds: float = 0.0
    delete_untagged: bool = False


def parse_gc(value: Any) -> GcSettings:
    if not isinstance(value, dict):
        raise ConfigError(f"gc: expected a table of settings, got {value!r}")
    settings: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("grace_seconds", "interval_seconds"):
            if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
                raise ConfigError(f"gc.{key}: expected a number of seconds >= 0, got {item!r}")
            settings[key] = float(item)
        elif key == "delete_untagged":
            if not isinstance(item, bool):
                raise ConfigError(f"gc.delete_untagged: expected true or false, got {item!r}")
            settings[key] = item
        else:
            raise ConfigError(f"unknown setting gc.{key} (known: grace_seconds, interval_seconds, delete_untagged)")
    return GcSettings(**settings)


@contextlib.contextmanager
def gc_lock(storage: Storage) -> Iterator[Lease]:
    """The registry's ``gc`` lease, held for the block; GcBusy when another process or replica has it."""
    with storage.metadata.maintenance_lease("gc") as lease:
        if not lease.held:
            from lamina.store import SqliteMetadataStore  # settings parsing imports this module: keep it light

            local = isinstance(storage.metadata, SqliteMetadataStore)
            where = storage.paths.root if local else "this registry (another process or replica holds the gc lease)"
            raise GcBusy(f"another garbage collection is running on {where}")
        yield lease


def sweep_blobs(storage: Storage) -> SweepBlobs:
    """Phase 2's view of the blob backend: files under the root, or S3 objects."""
    from lamina.store import S3BlobStore

    if isinstance(storage.blobs, S3BlobStore):
        from lamina.store.s3sweep import S3SweepBlobs

        return S3SweepBlobs(storage.blobs)
    return FilesystemSweepBlobs(storage.paths)


def run_gc(
    storage: Storage,
    settings: GcSettings,
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> SweepResult:
    """One collection; GcBusy if another is running. Blocking: call from a thread in the server."""
    with gc_lock(storage) as lease:
        result = sweep(
            storage.metadata,
            sweep_blobs(storage),
            storage.blobs.iter_digests(),
            before_batch=lease.check,  # fencing: a lease lost midway (connection gone) stops the deletions
            grace_seconds=settings.grace_seconds,
            delete_untagged=settings.delete_untagged,
            dry_run=dry_run,
            now=now,
        )
    return result


def format_report(result: SweepResult, *, dry_run: bool) -> list[str]:
    """Human lines: one per removed item, then a summary."""
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} untagged manifest {name}@{digest} ({size} bytes)" for name, digest, size in result.untagged]
    lines += [f"{verb.replace('delete', 'unlink')} blob {digest} from {name} (unreferenced)"
              for name, digest, _ in result.links]
    lines += [f"{verb} blob {digest} ({size} bytes)" for digest, size in result.blobs]
    lines.append(
        f"gc{' (dry run)' if dry_run else ''}: {len(result.untagged)} untagged manifest(s), "
        f"{len(result.links)} stale link(s), {len(result.blobs)} blob(s), {result.bytes_freed} bytes "
        f"{'would be ' if dry_run else ''}freed"
    )
    return lines


async def gc_forever(
    storage: Storage,
    settings: GcSettings,
    offload: Offloader,
    stop: asyncio.Event,
    on_result: Callable[[SweepResult], None] | None = None,
) -> None:
    """The background schedule (one worker runs it) until ``stop``; a busy lock just skips a round."""

    async def one_round() -> None:
        try:
            result = await offload.run(run_gc, storage, settings)
            if on_result is not None:
                on_result(result)
            if result.blobs or result.untagged or result.links:
                for line in format_report(result, dry_run=False)[-1:]:
                    log.info(line)
        except GcBusy as exc:
            log.info("%s; skipping this round", exc)

    await repeat_until_stopped(stop, settings.interval_seconds, one_round, log, "garbage collection", wait_first=True)

"""Reclaims abandoned upload sessions (spec: a registry MAY expire incomplete uploads).

Two kinds of leftovers: sessions idle for longer than ``upload_expiry_seconds`` (metadata and data),
and upload data on disk that no session names (a crash between creating the data file and recording
the session). Each round (at start, then every few minutes) also removes temp files a crashed writer
left in ``tmp/`` (``sweep_temp_files``). Idempotent, so several workers running it at once is harmless;
the server runs it in one worker, in a thread, so a slow disk never stalls request handling, and the
expiry under the ``uploads`` lease, so of several replicas sharing PostgreSQL and S3 one expires per
round (each still sweeps its own host's ``tmp/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from lamina.store import Storage

from .background import Offloader, repeat_until_stopped

__all__ = [
    "ORPHAN_MIN_AGE_SECONDS",
    "TMP_MAX_AGE_SECONDS",
    "expire_uploads",
    "expire_uploads_forever",
    "expire_uploads_once",
    "sweep_temp_files",
]

log = logging.getLogger("lamina.registry.janitor")

# tmp/ holds only the temp file of one atomic small write (FilesystemBlobStore.put: written, fsynced and
# renamed within one call, milliseconds) and open_storage's probe; upload data never goes there (it
# streams into uploads/<id>/). A file there an hour old was left by a writer that crashed.
TMP_MAX_AGE_SECONDS = 3600.0
# A session's data is created before its record (uploads.create, then metadata), so between the two a
# starting upload looks orphaned. Data younger than this is never taken for a crash's leftover, whatever
# upload_expiry_seconds says: with an expiry of a second or less the sweep otherwise removed the
# directory of a POST in flight, which then failed with a 500 (seen in CI with an expiry of 1 ms).
ORPHAN_MIN_AGE_SECONDS = 60.0


def sweep_temp_files(storage: Storage, now: float | None = None) -> int:
    """Remove what crashed writers left in ``tmp/`` (older than TMP_MAX_AGE_SECONDS); return how many."""
    return storage.blobs.sweep_tmp((time.time() if now is None else now) - TMP_MAX_AGE_SECONDS)


def expire_uploads(storage: Storage, expiry_seconds: float, now: float | None = None) -> int:
    """Delete every session idle for longer than ``expiry_seconds`` and orphaned data as old; return how many."""
    now = time.time() if now is None else now
    cutoff = now - expiry_seconds
    orphan_cutoff = min(cutoff, now - ORPHAN_MIN_AGE_SECONDS)
    expired = 0
    for session in storage.metadata.expired_uploads(cutoff):
        if storage.uploads.discard_unless_busy(session.id):  # a PATCH still streaming into it keeps it
            storage.metadata.delete_upload(session.id)
            expired += 1
    orphans = 0
    for session_id in storage.uploads.session_ids():
        with contextlib.suppress(FileNotFoundError, ValueError):
            modified = storage.uploads.last_modified(session_id)  # a local directory, or S3 objects
            if modified is None or modified >= orphan_cutoff:
                continue
            if storage.metadata.get_upload(session_id) is None:
                storage.uploads.discard(session_id)
                orphans += 1
    return expired + orphans


def expire_uploads_once(storage: Storage, expiry_seconds: float, now: float | None = None) -> int | None:
    """:func:`expire_uploads` under the registry's ``uploads`` lease (:mod:`lamina.store.leases`): None,
    doing nothing, while another process or replica expires sessions. Blocking."""
    with storage.metadata.maintenance_lease("uploads") as lease:
        if not lease.held:
            return None
        return expire_uploads(storage, expiry_seconds, now)


async def expire_uploads_forever(
    storage: Storage, expiry_seconds: float, offload: Offloader, stop: asyncio.Event
) -> None:
    """Every min(expiry/4, 5 min) until ``stop`` is set; a running pass is finished, never abandoned."""
    interval = max(1.0, min(expiry_seconds / 4, 300.0))

    async def one_round() -> None:
        count = await offload.run(expire_uploads_once, storage, expiry_seconds)  # once across replicas
        if count:
            log.info("expired %d abandoned upload session(s)", count)
        swept = await offload.run(sweep_temp_files, storage)
        if swept:
            log.info("removed %d temp file(s) a crashed writer left in %s", swept, storage.paths.tmp)

    await repeat_until_stopped(stop, interval, one_round, log, "expiring upload sessions", wait_first=False)

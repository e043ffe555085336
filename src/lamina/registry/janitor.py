"""Reclaims abandoned upload sessions (spec: a registry MAY expire incomplete uploads).

Two kinds of leftovers: sessions idle for longer than ``upload_expiry_seconds`` (metadata and data),
and upload data on disk that no session names (a crash between creating the data file and recording
the session). Idempotent, so several workers running it at once is harmless; the server runs it in one,
in a thread, so a slow disk never stalls request handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from lamina.store import Storage

from .services import Offloader, repeat_until_stopped

__all__ = ["expire_uploads", "expire_uploads_forever"]

log = logging.getLogger("lamina.registry.janitor")


def expire_uploads(storage: Storage, expiry_seconds: float, now: float | None = None) -> int:
    """Delete every session idle for longer than ``expiry_seconds`` and orphaned data as old; return how many."""
    cutoff = (time.time() if now is None else now) - expiry_seconds
    expired = list(storage.metadata.expired_uploads(cutoff))
    for session in expired:
        storage.uploads.discard(session.id)
        storage.metadata.delete_upload(session.id)
    orphans = 0
    for session_id in storage.uploads.session_ids():
        with contextlib.suppress(FileNotFoundError, ValueError):
            if storage.paths.upload_dir(session_id).stat().st_mtime >= cutoff:
                continue
            if storage.metadata.get_upload(session_id) is None:
                storage.uploads.discard(session_id)
                orphans += 1
    return len(expired) + orphans


async def expire_uploads_forever(
    storage: Storage, expiry_seconds: float, offload: Offloader, stop: asyncio.Event
) -> None:
    """Every min(expiry/4, 5 min) until ``stop`` is set; a running pass is finished, never abandoned."""
    interval = max(1.0, min(expiry_seconds / 4, 300.0))

    async def one_round() -> None:
        count = await offload.run(expire_uploads, storage, expiry_seconds)
        if count:
            log.info("expired %d abandoned upload session(s)", count)

    await repeat_until_stopped(stop, interval, one_round, log, "expiring upload sessions", wait_first=False)

"""Reclaims abandoned upload sessions (spec: a registry MAY expire incomplete uploads).

Idempotent, so running it in several workers at once is harmless; the server runs it in one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from lamina.store import Storage

__all__ = ["expire_uploads", "expire_uploads_forever"]

log = logging.getLogger("lamina.registry.janitor")


def expire_uploads(storage: Storage, expiry_seconds: float, now: float | None = None) -> int:
    """Delete every session idle for longer than ``expiry_seconds`` (its data first); return how many."""
    cutoff = (time.time() if now is None else now) - expiry_seconds
    expired = list(storage.metadata.expired_uploads(cutoff))
    for session in expired:
        storage.uploads.discard(session.id)
        storage.metadata.delete_upload(session.id)
    return len(expired)


async def expire_uploads_forever(storage: Storage, expiry_seconds: float) -> None:
    interval = max(1.0, min(expiry_seconds / 4, 300.0))
    while True:
        try:
            count = expire_uploads(storage, expiry_seconds)
            if count:
                log.info("expired %d abandoned upload session(s)", count)
        except Exception:
            log.exception("expiring upload sessions failed; retrying in %.0f s", interval)
        await asyncio.sleep(interval)

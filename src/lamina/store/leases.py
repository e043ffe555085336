"""Maintenance leases: garbage collection, lifecycle rules and upload expiry run once at a time across
every process that serves one registry (the workers of one host, or replicas on many hosts).

A lease is what the metadata backend can give every such process:

- **SQLite** (one host): an exclusive ``flock`` on ``<job>.lock`` beside ``metadata.db`` (GC's is
  ``ROOT/gc.lock``, the file fsck ``--repair`` waits on). The kernel drops it when its holder dies.
- **PostgreSQL** (any number of replicas): a session-level advisory lock, ``pg_try_advisory_lock``, on
  a connection of its own opened for the job (never a pooled one: a pooled connection outlives the job
  and would keep the lock). The server drops it when the connection ends, so a replica killed with
  SIGKILL, or one whose host vanished (TCP keepalives, ``keepalives_idle`` below), frees the job for
  the others: that is the lease's expiry.

**Fencing.** A holder whose connection broke no longer holds the lock, and another replica may start
the same job. :meth:`Lease.check` asks the server, on the lock's own connection, whether this backend
still holds it (``pg_locks``), and raises :class:`LeaseLost` otherwise; GC calls it before each batch
of deletions. Correctness against pushes never rests on the lease: every deletion runs under the GC
gate (:mod:`lamina.store.postgres`), so even two collections at once delete nothing a push is linking.
The lease only keeps the work from being done twice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import StoreError

__all__ = ["JOBS", "Lease", "LeaseLost", "file_lease", "job_key", "postgres_lease"]

JOBS = ("gc", "lifecycle", "uploads")  # the maintenance jobs that run once across replicas


class LeaseLost(StoreError):
    """The lease's holder no longer holds it (its database connection ended): stop the job."""


class Lease:
    """A held lease (``held`` True) or the news that another process holds it (``held`` False)."""

    def __init__(self, job: str, held: bool, conn: Any = None, key: int = 0) -> None:
        self.job = job
        self.held = held
        self._conn = conn
        self._key = key

    def check(self) -> None:
        """LeaseLost unless this process still holds the lease (a query on PostgreSQL; nothing on SQLite,
        where the kernel keeps a flock for as long as the holder lives)."""
        if not self.held:
            raise LeaseLost(f"maintenance lease {self.job!r} is not held by this process")
        if self._conn is None:
            return
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
                " AND objid = (%s::bigint & 4294967295)::oid AND classid = ((%s::bigint >> 32) & 4294967295)::oid",
                (self._key, self._key),
            ).fetchone()
        except Exception as exc:  # the connection broke: the server has released the lock
            raise LeaseLost(f"maintenance lease {self.job!r} lost: {exc}") from None
        if not row or not row[0]:
            raise LeaseLost(f"maintenance lease {self.job!r} lost: the database no longer shows it held")


def _check_job(job: str) -> None:
    if job not in JOBS:
        raise ValueError(f"unknown maintenance job {job!r} (known: {', '.join(JOBS)})")


@contextlib.contextmanager
def file_lease(directory: Path, job: str) -> Iterator[Lease]:
    """The SQLite backend's lease: ``flock(LOCK_EX | LOCK_NB)`` on ``directory/<job>.lock``."""
    _check_job(job)
    fd = os.open(directory / f"{job}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            yield Lease(job, False)
            return
        yield Lease(job, True)
    finally:
        os.close(fd)


def job_key(job: str) -> int:
    """The advisory lock key of a job: a signed 64-bit hash of ``lamina-maintenance:<job>``."""
    digest = hashlib.blake2b(f"lamina-maintenance:{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def postgres_lease(url: str, job: str, *, describe: str, connect_timeout: float = 10.0) -> Iterator[Lease]:
    """The PostgreSQL backend's lease: ``pg_try_advisory_lock`` on a connection opened for it."""
    import psycopg

    _check_job(job)
    key = job_key(job)
    try:
        conn = psycopg.connect(
            url, autocommit=True, connect_timeout=max(1, int(connect_timeout)),
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )
    except psycopg.Error as exc:
        raise StoreError(f"metadata database {describe}: cannot open the {job} lease's connection: {exc}") from exc
    try:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        held = bool(row and row[0])
        yield Lease(job, held, conn if held else None, key)
        if held:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.close()

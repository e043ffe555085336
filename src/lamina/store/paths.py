"""The registry's whole on-disk layout, in one place (after distribution's ``paths.go``).

::

    ROOT/                              mode 0700; every directory below 0700, every file 0600 (private.py)
      metadata.db                      SQLite (WAL): repositories, manifests, tags, links, sessions
      metadata.db-wal, metadata.db-shm SQLite's write-ahead log and shared index (do not copy alone)
      blobs/
        sha256/
          ab/
            abcdef0123...              one complete, digest-verified blob; mode 0400, never rewritten
        sha512/
          ...                          same shape for sha512 digests
      uploads/
        <session-id>/
          data                         bytes received so far for one upload session (appended in order)
      tmp/                             temp files for atomic writes (same filesystem, so rename is atomic);
                                       the janitor removes those older than an hour (a crashed writer's)
      quarantine/                      what fsck or verification on read found corrupt, moved out of
        <time>-<what>-<name>           blobs/ (or out of the database, for a manifest) so it is never
        <time>-<what>-<name>.json      served again, each beside a note saying what, why and what it
                                       affected (registry.fsck, store.integrity)
      gc.lock                          flock held by the one garbage collection running (registry.gc)
      auth/token-signing-key.pem       the token endpoint's EC key, created once (registry.auth.tokens)
      run/metrics/<type>_<pid>.db      each worker's metrics (prometheus_client's multiprocess files),
                                       summed by /metrics (registry.metrics, registry.metricsdir)

Everything that becomes visible (a blob) is first written elsewhere on the same filesystem and then
renamed into place, so a reader sees either no file or the whole verified file. Session ids are
validated here so that no id can name a path outside ``uploads/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lamina.oci import Digest

__all__ = ["StorePaths", "check_session_id"]

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is a safe single path component, else raise ValueError."""
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
        raise ValueError(f"invalid upload session id {session_id!r}: expected 1-128 of [A-Za-z0-9_-]")
    return session_id


@dataclass(frozen=True, slots=True)
class StorePaths:
    root: Path

    @property
    def metadata_db(self) -> Path:
        return self.root / "metadata.db"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine(self) -> Path:
        """Created on first use: a healthy root has none."""
        return self.root / "quarantine"

    def blob(self, digest: Digest) -> Path:
        """``blobs/<algorithm>/<first two hex>/<hex>``; the two-character fan-out keeps directories small."""
        return self.blobs / digest.algorithm / digest.encoded[:2] / digest.encoded

    def upload_dir(self, session_id: str) -> Path:
        return self.uploads / check_session_id(session_id)

    def upload_data(self, session_id: str) -> Path:
        return self.upload_dir(session_id) / "data"

    def metadata_sidecars(self) -> tuple[Path, ...]:
        """SQLite's own files beside ``metadata.db``: the write-ahead log and its shared-memory index."""
        return (self.root / "metadata.db-wal", self.root / "metadata.db-shm")

    def directories(self) -> tuple[Path, ...]:
        """The directories :func:`lamina.store.open_storage` creates up front."""
        return (self.root, self.blobs, self.uploads, self.tmp)

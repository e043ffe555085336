"""The local cache index: cache key -> result (a lazy layer chain) + the inputs that produced it.

One SQLite database (``cache.db`` in the state dir, WAL mode) with one table::

    records(key TEXT PRIMARY KEY,   -- the step's cache key (sha256:...)
            slot TEXT,              -- where the step sits: its parent key, or "from:<ref> <platform>"
            inputs TEXT,            -- the canonical inputs document (lamina.build.cachekey)
            layers TEXT,            -- JSON array of LayerRef.dump(), bottom layer first
            created_at TEXT, used_at TEXT)
    blob_sources(digest, repository)  -- "host/repo" known to hold a blob (we pushed or pulled it there),
                                      -- so a later push to another repo of that registry can mount it

A record is inserted in one transaction after all of its local blobs are in the content store, so a
build killed halfway never leaves a record pointing at missing bytes; two builds at once serialise on
SQLite's lock (busy timeout) and the later insert of the same key simply replaces identical content.
A lookup also checks that every local blob still exists, so a pruned store degrades to a miss.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lamina.build.cache.base import CachedResult, LayerRef, utc_now
from lamina.build.cachekey import describe_difference
from lamina.build.contentstore import ContentStore
from lamina.build.copykeys import ALIAS_FIELD
from lamina.oci import Digest, DigestError, parse_digest
from lamina.sqlitewal import switch_to_wal

__all__ = ["LocalCache"]

_OPEN_TIMEOUT = 60.0  # seconds a build waits for another one holding the index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    slot TEXT NOT NULL,
    inputs TEXT NOT NULL,
    layers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_slot ON records(slot, used_at);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (digest, repository)
);
"""


def _loads(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _open_index(path: Path) -> sqlite3.Connection:
    """Open (or create) the index in WAL mode with its tables; two builds may create it at once."""
    db = sqlite3.connect(path, timeout=_OPEN_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        switch_to_wal(db, _OPEN_TIMEOUT)
        # NORMAL in WAL mode: a commit is durable once the WAL is synced at checkpoint, not fsynced per
        # statement (a fully cached build records every step and every pushed blob: one fsync each with
        # FULL). A power cut can lose the last records, never corrupt the index: a lost record is a miss.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


class LocalCache:
    """CacheImporter + CacheExporter + MissExplainer over the state dir's SQLite index."""

    name = "local"

    def __init__(self, path: Path, content: ContentStore) -> None:
        self.path = Path(path)
        self.content = content
        self._lock = threading.Lock()
        self._db = _open_index(self.path)

    def close(self) -> None:
        self._db.close()

    def lookup(self, key: Digest) -> CachedResult | None:
        """The result recorded under ``key``; its ``key`` is the content key when ``key`` is an alias
        (a ``COPY --from`` definition key, see :mod:`lamina.build.copykeys`)."""
        with self._lock:
            row = self._db.execute(
                "SELECT layers, created_at, inputs FROM records WHERE key = ?", (str(key),)
            ).fetchone()
        if row is None:
            return None
        try:
            layers = tuple(LayerRef.parse(doc) for doc in json.loads(row[0]))
            alias = json.loads(row[2]).get(ALIAS_FIELD)  # COPY --from's definition key: its content key
            chain_key = parse_digest(alias) if alias else key
        except (ValueError, KeyError, TypeError, AttributeError, DigestError):
            return None  # an unreadable record is a miss, never a failed build
        if any(layer.source is None and not self.content.has(layer.descriptor.digest) for layer in layers):
            return None
        with self._lock:
            self._db.execute("UPDATE records SET used_at = ? WHERE key = ?", (utc_now(), str(key)))
        return CachedResult(chain_key, layers, row[1], "local")

    def add(self, key: Digest, inputs: Mapping[str, Any], result: CachedResult, *, slot: str) -> None:
        for layer in result.layers:
            if layer.source is None and not self.content.has(layer.descriptor.digest):
                raise ValueError(f"cannot record {key}: layer {layer.descriptor.digest} is not in the content store")
        row = (
            str(key),
            slot,
            json.dumps(dict(inputs), sort_keys=True),
            json.dumps([layer.dump() for layer in result.layers]),
            result.created_at,
            utc_now(),
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)", row)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def drop_blobs(self, digests: set[Digest]) -> int:
        """Forget every record whose chain names one of ``digests`` (found unreadable); returns how many."""
        dropped = 0
        with self._lock:
            for digest in sorted(digests):
                cursor = self._db.execute("DELETE FROM records WHERE instr(layers, ?) > 0", (f'"{digest}"',))
                dropped += cursor.rowcount
        return dropped

    async def finalize(self, target: CachedResult, *more: CachedResult) -> None:
        return None  # every add() is already committed

    def explain(self, slot: str, inputs: Mapping[str, Any]) -> str | None:
        """Compare with the most recently used record of the same instruction in the same slot (the
        parent); ``None`` if there is none. Another instruction on the same parent (a stage's first RUN
        and another stage's ``COPY --from`` both sit on the base image) explains nothing about this one,
        so it is no answer, and the next explainer (a remote cache's fingerprints) is asked."""
        with self._lock:
            rows = self._db.execute(
                "SELECT inputs FROM records WHERE slot = ? ORDER BY used_at DESC LIMIT 64", (slot,)
            ).fetchall()
        op = inputs.get("op")
        same = (doc for doc in (_loads(row[0]) for row in rows) if doc is not None and doc.get("op") == op)
        old = next(same, None)
        if old is None:
            return None
        reason = describe_difference(old, dict(inputs))
        if reason == "no difference":
            return "the cached result's layer blobs are missing from the local store"
        return reason

    def add_source(self, digest: Digest, repository: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO blob_sources VALUES (?, ?)", (str(digest), repository))

    def sources(self, digest: Digest) -> list[str]:
        """Repositories (``host/repo``) known to hold ``digest``, in a stable order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT repository FROM blob_sources WHERE digest = ? ORDER BY repository", (str(digest),)
            ).fetchall()
        return [row[0] for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

"""Small helpers shared by the store suites (imported by name: tests/store is on sys.path)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from lamina.oci import Digest
from lamina.store import StorePaths


def blob_digest(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


async def stream(data: bytes, chunk: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def blob_files(paths: StorePaths) -> list[Path]:
    """Every file under blobs/ (what a reader could see)."""
    found = []
    for directory, _dirs, files in os.walk(paths.blobs):
        found.extend(Path(directory) / name for name in files)
    return sorted(found)

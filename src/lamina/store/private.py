"""Who may read the registry's storage: its owner only.

The root is 0700, so no other local user can reach anything under it (pushed images of private
repositories, upload sessions in progress, the token signing key). Behind that gate every directory
the store creates is 0700 and every file 0600 (blobs 0400: read-only once published), so a file keeps
its privacy when copied or when the root is opened up by hand. SQLite gives ``metadata.db-wal`` and
``metadata.db-shm`` the mode of ``metadata.db`` itself, which is why the database file is created here,
0600, before SQLite first opens it. A root, database or log left wider by an older lamina is tightened
when the storage is opened; blobs published by an older version stay 0444 behind the 0700 root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["BLOB_MODE", "DIR_MODE", "FILE_MODE", "private_dir", "private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600
BLOB_MODE = 0o400


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) mode 0700, or tighten it if it exists with a wider mode."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, DIR_MODE)


def private_file(path: Path, *, create: bool) -> None:
    """Tighten ``path`` to 0600 if group or others may use it; with ``create``, make it (empty) first."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except FileNotFoundError:
        if create:
            raise
        return
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)

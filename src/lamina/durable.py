"""Durability for atomic writes, the builder's and the registry store's: after a rename, the directory
entry itself must reach the disk, or a crash can lose a file whose bytes were already fsynced."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(path: Path) -> None:
    """fsync directory ``path`` so the renames into it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Fixtures for the worker tests: a writable busybox root filesystem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from worker_helpers import EXTRA_APPLETS


@pytest.fixture
def rootfs_dir(busybox_rootfs: Path, tmp_path: Path) -> Path:
    """A private copy of the session's busybox rootfs, with a few more applet links."""
    dest = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, dest, symlinks=True)
    for applet in EXTRA_APPLETS:
        link = dest / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    return dest

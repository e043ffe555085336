"""Fixtures for the worker tests: a writable busybox root filesystem, that rootfs unpacked as a layer, an executor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from worker_helpers import EXTRA_APPLETS

from lamina.build.worker import LayerStore, RuncExecutor, write_layer


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


@pytest.fixture
def base(tmp_path: Path, rootfs_dir: Path) -> Path:
    """The busybox rootfs as an unpacked layer in a LayerStore (a module may override it to add files first)."""
    blob = write_layer(rootfs_dir, tmp_path / "blobs", source_date_epoch=1_700_000_000)
    return LayerStore(tmp_path / "state").unpack(blob.path, blob.media_type, blob.diff_id)


@pytest.fixture
def executor(tmp_path: Path) -> RuncExecutor:
    return RuncExecutor(tmp_path / "state")

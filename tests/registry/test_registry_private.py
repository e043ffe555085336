"""``lamina registry serve`` keeps its root private: after a real push (skopeo over loopback) the root is
0700 and nothing under it is readable by group or others; a root an older version left 0755, with a
0644 database, is tightened when the registry starts on it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from helpers.binaries import require_binary
from helpers.images import busybox_image
from helpers.registries import RegistryProcess, start_lamina
from lamina.store import open_storage


def open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (and root itself) that group or others may read, write or enter."""
    return [
        f"{path.relative_to(root)} {stat.filemode(path.lstat().st_mode)}"
        for path in [root, *root.rglob("*")]
        if stat.S_IMODE(path.lstat().st_mode) & 0o077
    ]


def test_a_pushed_image_is_private_to_the_registry_owner(
    make_lamina_registry: Callable[..., RegistryProcess], busybox_rootfs: Path
) -> None:
    require_binary("skopeo", "skopeo")
    server = make_lamina_registry()
    busybox_image(server, name="private/busybox", rootfs=busybox_rootfs)
    root = server.root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert any((root / "blobs").rglob("*")) and (root / "metadata.db").exists()
    assert open_to_others(root) == []


def test_serve_tightens_an_older_open_root(tmp_path: Path, busybox_rootfs: Path) -> None:
    require_binary("skopeo", "skopeo")
    workdir = tmp_path / "work"
    root = workdir / "root"
    open_storage(root).close()  # the layout an older version left: same files, wider modes
    os.chmod(root, 0o755)
    os.chmod(root / "metadata.db", 0o644)
    server = start_lamina(workdir)
    try:
        busybox_image(server, name="old/busybox", rootfs=busybox_rootfs)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert stat.S_IMODE((root / "metadata.db").stat().st_mode) == 0o600
        assert open_to_others(root) == []
    finally:
        server.stop()

"""COPY into a real overlay mount: writes land in the upper dir, the image's symlinks stay inside."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctx_helpers import listing, make_tree

from lamina.build.filecopy import apply_copy
from lamina.build.ops import CopyStep

pytestmark = pytest.mark.root


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if os.geteuid() != 0:
        pytest.skip("overlay mounts need root")
    lower = make_tree(tmp_path / "lower", {"etc/os-release": "busybox", "app": "-> /srv/app", "srv/app/old": "o",
                                           "evil": "-> ../../../../../.."})
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {proc.stderr.strip()}")
    try:
        yield merged, upper
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_copy_into_overlay_writes_only_the_upper_dir(tmp_path: Path, overlay: tuple[Path, Path]) -> None:
    merged, upper = overlay
    ctx = make_tree(tmp_path / "ctx", {"src/main.py": "print(1)", "src/pkg/mod.py": "x = 1", "big.bin": "b" * 300_000})
    apply_copy(CopyStep(sources=("src",), dest="/app/"), source_root=ctx, rootfs=merged)
    apply_copy(CopyStep(sources=("big.bin",), dest="/evil/data/"), source_root=ctx, rootfs=merged)
    assert listing(upper) == {"srv": "d", "srv/app": "d", "srv/app/main.py": "f:print(1)", "srv/app/pkg": "d",
                              "srv/app/pkg/mod.py": "f:x = 1", "data": "d", "data/big.bin": "f:" + "b" * 300_000}
    assert (merged / "srv/app/old").read_text() == "o"  # the lower's content is merged, not replaced

"""The build state directory is private (0700): it holds unpacked layers with their setuid binaries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lamina.build.state import BuildState, StateDirError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_state_dir_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        state = BuildState.open(tmp_path / "deep" / "state")
    finally:
        os.umask(old)
    state.close()
    assert _mode(tmp_path / "deep" / "state") == 0o700
    assert {"content", "layers", "snapshots", "tmp"} <= {p.name for p in (tmp_path / "deep" / "state").iterdir()}


def test_an_older_0755_state_dir_is_tightened_and_keeps_its_content(tmp_path: Path) -> None:
    root = tmp_path / "state"
    (root / "layers" / "sha256-abc").mkdir(parents=True)
    (root / "layers" / "sha256-abc" / "setuid-tool").write_bytes(b"x")
    os.chmod(root, 0o755)
    BuildState.open(root).close()
    assert _mode(root) == 0o700
    assert (root / "layers" / "sha256-abc" / "setuid-tool").read_bytes() == b"x"


def test_a_state_dir_that_cannot_be_made_private_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateDirError, match=r"^state directory .*/file cannot be made private \(mode 0700\): .*--root"):
        BuildState.open(blocker)

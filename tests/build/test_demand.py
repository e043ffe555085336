"""Which stages a build solves, decided from cache keys: errors still name the failing stage's line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.cli import main

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="demand/busybox", rootfs=busybox_rootfs).reference


def test_an_error_in_a_copied_from_stage_names_that_stage_line(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base} AS builder\nCOPY missing.txt /m.txt\nFROM {base}\nRUN echo x > /x\nCOPY --from=builder /m.txt /\n"
    )
    assert main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), str(context)]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "Dockerfile:2" in error[0] and "missing.txt" in error[0], error


def test_a_cached_copy_from_does_not_solve_its_stage(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base} AS builder\nRUN echo built > /b && echo ran-builder\n"
        f"FROM {base}\nCOPY --from=builder /b /b\n"
    )
    args = ["build", "--progress", "plain", "--root", str(tmp_path / "state"), str(context)]
    assert main(args) == 0
    assert "ran-builder" in capsys.readouterr().err
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "[builder" not in err and "CACHED" in err  # the builder stage is not even listed

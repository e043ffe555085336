"""Owners the way BuildKit sets them beyond the corpus: WORKDIR and --chown through the file op's
``readUser`` (a number is uid and gid, a name the image lacks is 0), RUN through runc's ``GetExecUser``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers.images import busybox_image
from helpers.parity_dump import dump_layout
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


def test_workdir_chown_and_run_owners(lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path) -> None:
    base = busybox_image(lamina_registry, name="owners/busybox", rootfs=busybox_rootfs).reference
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a\n")
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "USER 1234\nWORKDIR /w1234\n"  # file op: 1234:1234 (RUN would be 1234:0)
        "USER app\nWORKDIR /wapp\n"
        "USER ghost:app\nWORKDIR /wghost\n"  # no such user: uid 0, the group still resolves
        "USER 1234\nRUN id -u > /tmp/run.txt && id -g >> /tmp/run.txt && id -G >> /tmp/run.txt\n"
        "USER root\n"
        "COPY --chown=ghost a.txt /ghost.txt\n"
        "COPY --chown=4321 a.txt /uid-only.txt\n"
        "COPY --chown=app:0 a.txt /app-root.txt\n"
    )
    out = tmp_path / "image.tar"
    argv = [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(tmp_path / "state"),
            "--output", f"type=oci,dest={out}", str(context)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "layout", filter="data")
    dump, _ = dump_layout(tmp_path / "layout")
    (image,) = dump.images.values()
    owners = {path: (entry["uid"], entry["gid"]) for path, entry in image.rootfs.items()}
    assert owners["/w1234"] == (1234, 1234)
    assert owners["/wapp"] == (1000, 1000)
    assert owners["/wghost"] == (0, 1000)
    assert owners["/ghost.txt"] == (0, 0)
    assert owners["/uid-only.txt"] == (4321, 4321)
    assert owners["/app-root.txt"] == (1000, 0)
    run_layer = next(layer for layer in image.layers if "id -u" in layer.get("created_by", ""))
    run_file = next(e for e in run_layer["entries"] if e["name"] == "tmp/run.txt")
    assert (run_file["uid"], run_file["gid"]) == (1234, 0)  # RUN: an unknown uid runs with gid 0
    assert run_file["size"] == len("1234\n0\n0\n")  # id -G: the primary gid is the only group

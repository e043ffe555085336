"""RUN's surroundings, end to end with real runc and overlay mounts: ``--runtime`` (runc by default, crun
selectable, a missing binary is one error line naming its Debian package), ``HOME`` from the user's passwd
entry as Docker sets it, and the sweep of snapshots a killed build left behind.

crun itself cannot run containers on this machine (hybrid cgroups), so the crun plumbing test puts the
real runc binary on PATH under the name ``crun``: what is checked is that the flag reaches the executor
(which keeps a runtime state dir per runtime name), not crun's behaviour.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    return busybox_image(lamina_registry, name="runtime/busybox", rootfs=busybox_rootfs).reference


_EXECUTOR_DIRS = ("bundles", "network")  # the executor's own dirs beside the runtime's root


def _build(capsys: pytest.CaptureFixture[str], tmp_path: Path, dockerfile: str, *args: str) -> tuple[int, str]:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), *args, str(context)])
    return rc, capsys.readouterr().err


def _output(err: str) -> list[str]:
    """The RUN output lines (``#N 0.123 text``) of plain progress."""
    return re.findall(r"^#\d+ \d+\.\d+ (.*)$", err, re.M)


def test_runc_is_the_default(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _build(capsys, tmp_path, f"FROM {base}\nRUN echo ran\n")
    assert rc == 0, err
    assert "ran" in _output(err)
    assert sorted(p.name for p in (tmp_path / "state" / "runc").iterdir() if p.name not in _EXECUTOR_DIRS) == ["runc"]


def test_runtime_crun_reaches_the_executor(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "crun").symlink_to(shutil.which("runc") or "runc")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    rc, err = _build(capsys, tmp_path, f"FROM {base}\nRUN echo ran-by-crun\n", "--runtime", "crun")
    assert rc == 0, err
    assert "ran-by-crun" in _output(err)
    assert sorted(p.name for p in (tmp_path / "state" / "runc").iterdir() if p.name not in _EXECUTOR_DIRS) == ["crun"]


def test_missing_runtime_is_one_line_naming_the_package(base: str, tmp_path: Path) -> None:
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "crun").exists())
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo never\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "build", "--runtime", "crun", "--progress", "plain",
         "--root", str(tmp_path / "state"), str(context)],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PATH": path},
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Dockerfile:2" in errors[0]
    assert "OCI runtime 'crun' not found in PATH: install it (Debian package 'crun')" in errors[0]


def test_unknown_runtime_is_refused_by_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["build", "--runtime", "kata", str(tmp_path)])
    assert exc.value.code == 2 and "invalid choice: 'kata'" in capsys.readouterr().err


def test_home_comes_from_passwd_unless_set(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = f"""\
FROM {base}
RUN echo "root-home=$HOME"
USER app
RUN echo "app-home=$HOME"
USER 4242
RUN echo "unknown-home=$HOME"
USER 0
RUN sed -i '/^root:/d' /etc/passwd && echo removed
RUN echo "rootless-passwd-home=$HOME"
ENV HOME=/custom
USER app
RUN echo "env-home=$HOME"
"""
    rc, err = _build(capsys, tmp_path, dockerfile)
    assert rc == 0, err
    lines = [line for line in _output(err) if "-home=" in line]
    assert lines == ["root-home=/root", "app-home=/home/app", "unknown-home=/", "rootless-passwd-home=/root",
                     "env-home=/custom"]


def test_a_build_sweeps_snapshots_a_killed_build_left(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    stale = state / "snapshots" / "stale-one"
    for name in ("lower", "upper", "work", "rootfs"):
        (stale / name).mkdir(parents=True)
    (stale / "lower" / "left-over").write_text("x")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (stale / "owner").write_text(str(dead.pid))  # a process that no longer runs
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={stale / 'lower'},upperdir={stale / 'upper'},workdir={stale / 'work'}",
                    str(stale / "rootfs")], check=True)
    try:
        assert (stale / "rootfs" / "left-over").exists()
        rc, err = _build(capsys, tmp_path, f"FROM {base}\nRUN echo swept\n")
        assert rc == 0, err
        assert not stale.exists()
        with open("/proc/self/mounts") as fh:
            assert not [line for line in fh if str(stale) in line]
    finally:
        if (stale / "rootfs").is_mount():
            subprocess.run(["umount", str(stale / "rootfs")], check=False)


def test_an_unknown_user_is_one_error_naming_it(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RUN resolves USER in the image (runc's GetExecUser); a WORKDIR it creates resolves it as BuildKit's
    file op does, where a name the image lacks owns the directory as 0:0 instead of failing."""
    rc, err = _build(capsys, tmp_path, f"FROM {base}\nUSER ghost\nWORKDIR /made-for-ghost\n")
    assert rc == 0, err
    rc, err = _build(capsys, tmp_path, f"FROM {base}\nUSER ghost\nRUN true\n")
    assert rc == 1, err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Dockerfile:3" in error[0], err
    assert "USER 'ghost': unable to find user ghost: no matching entries in passwd file" in error[0], err

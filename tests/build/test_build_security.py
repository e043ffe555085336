"""``lamina build`` end to end (real registry, runc): a Dockerfile RUN gets the security profile by default
(seccomp, noNewPrivileges, Docker's capabilities, no new namespaces), and ``RUN --security=insecure`` with
``--allow security.insecure`` lifts it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.binaries import require_binary
from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.cli import main

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

BB = "/bin/busybox"
PROBE = (
    f"{BB} grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status > /{{name}}.txt; "
    f"({BB} unshare -Ur {BB} true 2>/dev/null && echo userns=yes || echo userns=no) >> /{{name}}.txt; "
    f"{BB} hostname >> /{{name}}.txt"
)


def test_run_security_profile_by_default_and_insecure_with_the_entitlement(
    lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_binary("slirp4netns", "slirp4netns")  # the default RUN network
    base = busybox_image(lamina_registry, name="security/busybox", rootfs=busybox_rootfs).reference
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}\nRUN {PROBE.format(name='sandbox')}\nRUN --security=insecure {PROBE.format(name='insecure')}\n"
    )
    dest = tmp_path / "out"
    rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), "--allow", "security.insecure",
               "--output", f"type=local,dest={dest}", str(context)])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 0, err
    sandbox = (dest / "sandbox.txt").read_text().split()
    assert sandbox == ["CapEff:", "00000000a80425fb", "NoNewPrivs:", "1", "Seccomp:", "2", "userns=no",
                       "buildkitsandbox"]  # fmt: skip
    insecure = (dest / "insecure.txt").read_text().split()
    assert insecure[2:6] == ["NoNewPrivs:", "0", "Seccomp:", "0"] and insecure[6] == "userns=yes"
    assert int(insecure[1], 16) & 0x200000  # CAP_SYS_ADMIN


def test_a_missing_seccomp_profile_fails_the_run_in_one_line(
    lamina_registry: RegistryProcess,
    busybox_rootfs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_binary("slirp4netns", "slirp4netns")
    base = busybox_image(lamina_registry, name="security/busybox", rootfs=busybox_rootfs).reference
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo never > /ran.txt\n")
    monkeypatch.setenv("LAMINA_SECCOMP_PROFILE", str(tmp_path / "nowhere.json"))
    rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"),
               "--output", f"type=local,dest={tmp_path / 'out'}", str(context)])  # fmt: skip
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(errors) == 1, err
    assert f"seccomp profile '{tmp_path / 'nowhere.json'}' (from $LAMINA_SECCOMP_PROFILE) not found" in errors[0]
    assert not (tmp_path / "out" / "ran.txt").exists()

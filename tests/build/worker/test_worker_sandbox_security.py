"""The RUN sandbox's security profile in real runc containers: seccomp, noNewPrivileges, capabilities,
masked and read-only paths, devices, the pids limit in a per-container cgroup, and what insecure lifts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY

from lamina.build.worker import OverlaySnapshotter, RuncExecutor, RunSpec
from lamina.build.worker.seccomp import SeccompProfileError

pytestmark = ROOT_ONLY

DOCKER_CAPEFF = "00000000a80425fb"
PROBE = (
    "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status;"
    "unshare -Ur true 2>/dev/null && echo userns=yes || echo userns=no;"
    "unshare -m true 2>/dev/null && echo mountns=yes || echo mountns=no;"
    "echo interrupts=$(wc -c < /proc/interrupts) keys=$(wc -c < /proc/keys) timers=$(wc -c < /proc/timer_list);"
    "echo firmware=$(ls /sys/firmware | wc -l);"
    "(echo x > /proc/sys/kernel/hostname) 2>/dev/null && echo procsys=rw || echo procsys=ro;"
    "touch /sys/kernel/x 2>&1 | grep -q 'Read-only' && echo sys=ro || echo sys=rw;"
    "echo devices=$(ls /dev | tr '\\n' ,);"
    # Nodes made with mknod (allowed, as in Docker): a loop block device and /dev/kmsg's char device.
    "mknod /tmp/blk b 7 0 && ( (: < /tmp/blk) 2>/dev/null && echo blockdev=open || echo blockdev=denied);"
    "mknod /tmp/chr c 1 11 && ( (: < /tmp/chr) 2>/dev/null && echo chardev=open || echo chardev=denied);"
    "hostname"
)


async def run(executor: RuncExecutor, base: Path, tmp_path: Path, script: str, **fields: object) -> dict[str, str]:
    """Run ``script``; its ``key: value`` / ``key=value`` lines as a dict (the last line also as 'last')."""
    lines: list[str] = []
    fields.setdefault("network", "none")
    with OverlaySnapshotter(tmp_path / "state").prepare([base]) as snap:
        spec = RunSpec(argv=("/bin/sh", "-c", script), **fields)  # type: ignore[arg-type]
        await executor.run(spec, snap.rootfs, lambda _stream, line: lines.append(line), check=False)
    snap.discard()
    out = {"last": lines[-1] if lines else "", "all": "\n".join(lines)}
    for line in lines:
        for key, value in re.findall(r"(\w+)[:=]\s*(\S+)", line):
            out.setdefault(key, value)
    return out


def cgroup_dir(line: str) -> Path:
    """The directory of the cgroup a /proc/PID/cgroup line names (v1 pids hierarchy, or v2)."""
    _, controllers, path = line.split(":", 2)
    root = Path("/sys/fs/cgroup/pids") if controllers == "pids" else Path("/sys/fs/cgroup")
    return root / path.lstrip("/")


async def test_sandbox_defaults(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    out = await run(executor, base, tmp_path, PROBE)
    assert (out["Seccomp"], out["NoNewPrivs"], out["CapEff"]) == ("2", "1", DOCKER_CAPEFF)
    assert out["userns"] == "no" and out["mountns"] == "no"
    assert out["interrupts"] == out["keys"] == out["timers"] == "0" and out["firmware"] == "0"  # masked
    assert out["procsys"] == "ro" and out["sys"] == "ro"
    assert "fuse" not in out["devices"] and "kvm" not in out["devices"]
    assert out["blockdev"] == out["chardev"] == "denied"  # the device cgroup refuses what runc did not allow
    assert out["last"] == "buildkitsandbox"
    user = await run(executor, base, tmp_path, PROBE, uid=1000, gid=1000)
    assert (user["Seccomp"], user["NoNewPrivs"], user["CapEff"]) == ("2", "1", "0000000000000000")
    assert user["userns"] == "no"


async def test_insecure_lifts_each_restriction(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    out = await run(executor, base, tmp_path, PROBE, security="insecure")
    assert (out["Seccomp"], out["NoNewPrivs"]) == ("0", "0")
    # Every capability the builder holds (BuildKit's cap.Current), Docker's set among them.
    assert int(out["CapEff"], 16) == int(Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0], 16)
    assert int(out["CapEff"], 16) & int(DOCKER_CAPEFF, 16) == int(DOCKER_CAPEFF, 16)
    assert out["userns"] == "yes" and out["mountns"] == "yes"
    assert int(out["interrupts"]) > 0 and out["procsys"] == "rw" and out["sys"] == "rw"
    assert {"fuse", "kvm", "loop-control", "loop0", "loop7", "kmsg", "net"} <= set(out["devices"].split(","))
    assert out["chardev"] == "open"  # every device allowed
    user = await run(executor, base, tmp_path, PROBE, security="insecure", uid=1000, gid=1000)
    assert user["CapEff"] == out["CapEff"]  # BuildKit hands every capability on through the ambient set


async def test_pids_limit_in_per_container_cgroups(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    # The inner shell dies at the failed fork; the outer one counts with a glob (no fork left to spare)
    # and ends the sleepers, so the test stays fast.
    script = "sh -c 'for i in $(seq 1 40); do sleep 30 & done'; set -- /proc/[0-9]*; echo running=$#; kill -9 -1"
    out = await run(executor, base, tmp_path, script, pids_limit=16)
    assert 1 < int(out["running"]) <= 16
    assert "can't fork" in out["all"] or "Resource temporarily unavailable" in out["all"]
    show = "grep ':pids:' /proc/self/cgroup || grep '^0::' /proc/self/cgroup; sleep 0.3"
    results = await asyncio.gather(*(run(executor, base, tmp_path, show) for _ in range(3)))
    dirs = [cgroup_dir(r["last"]) for r in results]
    assert len(set(dirs)) == 3 and all(re.fullmatch(r"lamina-[0-9a-f]{16}", d.name) for d in dirs)
    assert all(d.parent.is_dir() for d in dirs) and not [d for d in dirs if d.exists()]  # runc delete removed them


async def test_missing_profile_fails_the_run_in_one_line(
    executor: RuncExecutor, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINA_SECCOMP_PROFILE", str(tmp_path / "nowhere.json"))
    with pytest.raises(
        SeccompProfileError, match=r"nowhere\.json' \(from \$LAMINA_SECCOMP_PROFILE\) not found"
    ) as info:
        await run(executor, base, tmp_path, "true")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "state" / "bundles").exists() or not list((tmp_path / "state" / "bundles").iterdir())
    out = await run(executor, base, tmp_path, PROBE, security="insecure")  # insecure needs no profile
    assert out["Seccomp"] == "0"

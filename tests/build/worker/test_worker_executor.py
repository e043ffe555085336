"""RuncExecutor: RUN steps in real runc containers on real overlay snapshots."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY, tar_members

from lamina.build.worker import (
    CopySnapshotter,
    LayerStore,
    OverlaySnapshotter,
    RuncExecutor,
    RunFailed,
    RunSpec,
    resolve_user,
    write_layer,
)

pytestmark = ROOT_ONLY

EPOCH = 1_700_000_000


@pytest.fixture
def base(tmp_path: Path, rootfs_dir: Path) -> Path:
    (rootfs_dir / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\nstaff:x:50:app\n")
    blob = write_layer(rootfs_dir, tmp_path / "blobs", source_date_epoch=EPOCH)
    return LayerStore(tmp_path / "state").unpack(blob.path, blob.media_type, blob.diff_id)


@pytest.fixture
def executor(tmp_path: Path) -> RuncExecutor:
    return RuncExecutor(tmp_path / "state")


async def run(
    executor: RuncExecutor, base: Path, tmp_path: Path, script: str, **fields: object
) -> tuple[int, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    snapshotter = OverlaySnapshotter(tmp_path / "state")
    check = bool(fields.pop("check", True))
    with snapshotter.prepare([base]) as snap:
        spec = RunSpec(argv=("/bin/sh", "-c", script), **fields)  # type: ignore[arg-type]
        code = await executor.run(spec, snap.rootfs, lambda stream, line: lines.append((stream, line)), check=check)
    snap.discard()
    return code, lines


async def test_output_env_cwd_and_exit_code(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    code, lines = await run(
        executor,
        base,
        tmp_path,
        "echo out; echo err >&2; echo A=$A; pwd; echo $PATH; hostname; exit 0",
        env=("A=hello world",),
        cwd="/tmp",
    )
    assert code == 0
    assert ("stdout", "out") in lines and ("stderr", "err") in lines
    stdout = [line for stream, line in lines if stream == "stdout"]
    assert stdout == ["out", "A=hello world", "/tmp", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      "buildkitsandbox"]  # fmt: skip


async def test_failure_raises_with_exit_code_and_last_lines(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    script = "for i in $(seq 1 30); do echo line$i; done; echo bad >&2; exit 3"
    with pytest.raises(RunFailed) as info:
        await run(executor, base, tmp_path, script)
    assert info.value.exit_code == 3
    assert "bad" in info.value.last_lines  # stdout and stderr are separate pipes: no total order
    assert "line30" in info.value.last_lines and "line1" not in info.value.last_lines
    assert "exit code: 3" in str(info.value)
    code, _ = await run(executor, base, tmp_path, "exit 7", check=False)
    assert code == 7
    assert os.listdir(tmp_path / "state" / "bundles") == []
    listing = subprocess.run(
        ["runc", "--root", str(tmp_path / "state" / "runc"), "list", "-q"], capture_output=True, text=True, check=True
    )
    assert listing.stdout.strip() == ""


async def test_user_and_groups(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    user = resolve_user(base, "app")
    assert (user.uid, user.gid, user.additional_gids) == (1000, 1000, (1000, 10, 50))
    _, lines = await run(
        executor,
        base,
        tmp_path,
        "id -u; id -g; id -G; touch /tmp/mine; stat -c %u:%g /tmp/mine; cat /proc/self/status | grep CapEff",
        uid=user.uid,
        gid=user.gid,
        additional_gids=user.additional_gids,
    )
    stdout = [line for stream, line in lines if stream == "stdout"]
    assert stdout[:4] == ["1000", "1000", "1000 10 50", "1000:1000"]
    assert stdout[4].split() == ["CapEff:", "0000000000000000"]
    _, lines = await run(executor, base, tmp_path, "id -u; grep CapEff /proc/self/status")
    uid_line, caps_line = (line for _, line in lines)
    assert uid_line == "0"
    assert caps_line.split()[1] == "00000000a80425fb"  # Docker's default set


async def test_network_modes_and_rlimits(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    _, isolated = await run(executor, base, tmp_path, "cat /proc/net/dev | tail -n +3", network="none")
    assert [line.split(":")[0].strip() for _, line in isolated] == ["lo"]
    _, host = await run(executor, base, tmp_path, "cat /proc/net/dev | tail -n +3", network="host")
    assert len(host) == len(Path("/proc/net/dev").read_text().splitlines()) - 2
    _, limits = await run(executor, base, tmp_path, "ulimit -n; ulimit -Hn")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = str(1 << 20 if hard == resource.RLIM_INFINITY else min(1 << 20, hard))
    assert [line for _, line in limits] == [expected, expected]


async def test_hosts_and_resolv_conf_are_the_hosts_and_read_only(
    executor: RuncExecutor, base: Path, tmp_path: Path
) -> None:
    script = "cat /etc/hosts; echo x >> /etc/hosts || echo readonly"
    _, lines = await run(executor, base, tmp_path, script, network="host", check=False)
    stdout = [line for stream, line in lines if stream == "stdout"]
    assert stdout[:-1] == Path("/etc/hosts").read_text().splitlines()
    assert stdout[-1] == "readonly"


async def test_cancel_kills_and_deletes_the_container(executor: RuncExecutor, base: Path, tmp_path: Path) -> None:
    task = asyncio.create_task(run(executor, base, tmp_path, "echo started; sleep 60"))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    listing = subprocess.run(
        ["runc", "--root", str(tmp_path / "state" / "runc"), "list", "-q"], capture_output=True, text=True, check=True
    )
    assert listing.stdout.strip() == ""
    assert not [p for p in (tmp_path / "state" / "snapshots").iterdir() if not p.name.startswith(".")]


def test_unknown_runtime_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="OCI runtime 'no-such-runtime' not found"):
        RuncExecutor(tmp_path, runtime="no-such-runtime")


RUN_SCRIPT = (
    "set -e; rm /bin/gzip; echo appended >> /etc/passwd; chmod 600 /etc/group; mkdir -p /opt/app/bin;"
    " echo hi > /opt/app/bin/tool; ln /opt/app/bin/tool /opt/app/bin/tool2; ln -s tool /opt/app/bin/t;"
    " rm -rf /home/app; mkdir /home/app; echo fresh > /home/app/f; mv /root /root2; chown 1000:1000 /opt/app"
)


async def test_rm_in_run_gives_a_whiteout_and_copy_matches_overlay(
    executor: RuncExecutor, base: Path, tmp_path: Path
) -> None:
    digests = {}
    for snapshotter in (OverlaySnapshotter(tmp_path / "state"), CopySnapshotter(tmp_path / "state")):
        with snapshotter.prepare([base]) as snap:
            await executor.run(RunSpec(argv=("/bin/sh", "-c", RUN_SCRIPT)), snap.rootfs)
        blob = write_layer(snap.upper, tmp_path / "out", source_date_epoch=EPOCH)
        snap.discard()
        members = {m.name: m for m in tar_members(blob.path)}
        assert "bin/.wh.gzip" in members
        assert "home/app/.wh..wh..opq" in members
        assert members["root2"].isdir()
        assert ".wh.root" in members
        assert members["opt/app/bin/tool2"].islnk()
        assert members["opt/app"].uid == 1000
        assert not any(name.startswith(("etc/hosts", "etc/resolv.conf", "dev/", "proc/")) for name in members)
        digests[type(snapshotter).__name__] = blob.digest
    assert digests["OverlaySnapshotter"] == digests["CopySnapshotter"]

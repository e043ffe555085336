"""The RUN sandbox's network with real runc and slirp4netns: own namespace, outbound through the user-mode
stack to a "remote host" the test builds (a namespace behind a veth pair), nothing on the host's loopback
reachable, and no namespace or slirp4netns process left behind after success, failure or cancellation."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY

from helpers.binaries import require_binary
from helpers.netns import LoopbackServer, RemoteHost, lamina_namespaces, loopback_server, remote_host, slirp_children
from lamina.build.worker import OverlaySnapshotter, RuncExecutor, RunFailed, RunSpec
from lamina.build.worker.usernet import HOSTS_FILE, SLIRP_DNS, NetworkPool, cleanup_stale_namespaces, resolv_conf_text

pytestmark = ROOT_ONLY


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_binary("slirp4netns", "slirp4netns")
    require_binary("ip", "iproute2")


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteHost]:
    with remote_host({"hello.txt": "hello from the remote host\n"}, tmp_path) as host:
        yield host


@pytest.fixture
def host_server() -> Iterator[LoopbackServer]:
    with loopback_server() as server:
        yield server


async def run(executor: RuncExecutor, base: Path, tmp_path: Path, script: str, **fields: object) -> list[str]:
    lines: list[str] = []
    with OverlaySnapshotter(tmp_path / "state").prepare([base]) as snap:
        spec = RunSpec(argv=("/bin/sh", "-c", script), **fields)  # type: ignore[arg-type]
        await executor.run(spec, snap.rootfs, lambda stream, line: lines.append(line) if stream == "stdout" else None)
    snap.discard()
    return lines


def _wget(url: str) -> str:
    return f"/bin/busybox timeout 5 /bin/busybox wget -q -O- {url} || echo unreachable"  # wget -T segfaults


async def test_sandbox_reaches_a_remote_host_but_not_the_hosts_loopback(
    executor: RuncExecutor, base: Path, tmp_path: Path, remote: RemoteHost, host_server: LoopbackServer
) -> None:
    script = "; ".join([
        "ls /sys/class/net | tr '\\n' ' '; echo",
        _wget(remote.url("hello.txt")),
        _wget(f"http://127.0.0.1:{host_server.port}/"),  # the namespace's own loopback: nothing listens
        _wget(f"http://10.0.2.2:{host_server.port}/"),  # slirp4netns's gateway -> the host's 127.0.0.1: refused
        "cat /etc/resolv.conf /etc/hosts",
    ])  # fmt: skip
    lines = await run(executor, base, tmp_path, script)
    assert lines[0].split() == ["lo", "tap0"]
    assert lines[1] == "hello from the remote host"
    assert lines[2:4] == ["unreachable", "unreachable"]
    assert host_server.hits == 0
    assert lines[4] == f"nameserver {SLIRP_DNS}"
    assert "\n".join(lines[4:]).endswith(HOSTS_FILE.rstrip("\n"))
    assert "127.0.0.1\tlocalhost buildkitsandbox" in lines


async def test_host_mode_is_the_hosts_network(
    executor: RuncExecutor, base: Path, tmp_path: Path, host_server: LoopbackServer
) -> None:
    lines = await run(executor, base, tmp_path, _wget(f"http://127.0.0.1:{host_server.port}/"), network="host")
    assert lines == ["host-secret"] and host_server.hits == 1


async def test_none_mode_has_only_loopback_and_the_sandbox_hosts_file(
    executor: RuncExecutor, base: Path, tmp_path: Path, remote: RemoteHost
) -> None:
    script = f"ls /sys/class/net; {_wget(remote.url('hello.txt'))}; cat /etc/hosts"
    lines = await run(executor, base, tmp_path, script, network="none")
    assert lines[:2] == ["lo", "unreachable"]
    assert "\n".join(lines[2:]) + "\n" == HOSTS_FILE


async def test_nothing_is_left_after_success_failure_and_cancellation(
    executor: RuncExecutor, base: Path, tmp_path: Path
) -> None:
    assert await run(executor, base, tmp_path, "echo ok") == ["ok"]
    assert lamina_namespaces() == [] and slirp_children() == []
    with pytest.raises(RunFailed):
        await run(executor, base, tmp_path, "exit 3")
    assert lamina_namespaces() == [] and slirp_children() == []
    task = asyncio.create_task(run(executor, base, tmp_path, "echo started; sleep 60"))
    for _ in range(100):  # until the container runs in its namespace
        await asyncio.sleep(0.05)
        if lamina_namespaces() and slirp_children():
            break
    assert len(lamina_namespaces()) == 1 and len(slirp_children()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lamina_namespaces() == [] and slirp_children() == []


async def test_a_pool_prepares_the_next_network_and_tears_used_ones_down_in_the_background(
    base: Path, tmp_path: Path, remote: RemoteHost
) -> None:
    pool = NetworkPool(tmp_path / "net")
    executor = RuncExecutor(tmp_path / "state", networks=pool)
    script = f"cat /proc/self/net/dev | grep -c tap0; {_wget(remote.url('hello.txt'))}"
    for _ in range(3):  # a fresh namespace every time, prepared while the previous RUN ran
        assert await run(executor, base, tmp_path, script) == ["1", "hello from the remote host"]
        assert len(lamina_namespaces()) <= 3  # the spare, plus at most the last ones still being torn down
    task = asyncio.create_task(run(executor, base, tmp_path, "sleep 60"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pool.aclose()
    assert lamina_namespaces() == [] and slirp_children() == []
    with pytest.raises(RuntimeError, match="pool is closed"):
        await pool.take()


async def test_concurrent_takes_keep_one_spare_and_leave_nothing(tmp_path: Path) -> None:
    pool = NetworkPool(tmp_path / "net")
    nets = await asyncio.gather(*(pool.take() for _ in range(3)))  # as parallel stages do
    assert len({net.path for net in nets}) == 3
    for net in nets:
        pool.retire(net)
    await pool.aclose()
    assert lamina_namespaces() == [] and slirp_children() == []


async def test_a_take_cancelled_while_the_network_opens_leaves_nothing(tmp_path: Path) -> None:
    pool = NetworkPool(tmp_path / "net")
    taking = asyncio.create_task(pool.take())
    await asyncio.sleep(0)  # started: `ip netns add` is on its way
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    await pool.aclose()  # waits for the opening network, then tears it down
    assert lamina_namespaces() == [] and slirp_children() == []


async def test_namespaces_of_dead_processes_are_swept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"lamina-{dead.pid}-0badc0ffee00"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in await cleanup_stale_namespaces()
        assert not Path("/run/netns", name).exists()
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_resolv_conf_names_the_stacks_dns_and_keeps_search_and_options() -> None:
    host = "# generated\nnameserver 127.0.0.53\nsearch corp.example\noptions edns0 trust-ad\n"
    assert resolv_conf_text(host) == f"nameserver {SLIRP_DNS}\nsearch corp.example\noptions edns0 trust-ad\n"

"""``lamina build`` and the RUN sandbox's network, end to end (real registry, runc, slirp4netns): the host's
loopback unreachable by default, ``--network=host`` and ``--security=insecure`` only with ``--allow``, outbound
traffic through the user-mode stack, and the effective modes in the cache key."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.binaries import require_binary
from helpers.images import busybox_image
from helpers.netns import LoopbackServer, RemoteHost, lamina_namespaces, loopback_server, remote_host
from helpers.registries import RegistryProcess
from lamina.cli import main

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

WGET = "/bin/busybox timeout 5 /bin/busybox wget -q -O-"  # busybox's own wget -T segfaults


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    require_binary("slirp4netns", "slirp4netns")
    require_binary("ip", "iproute2")
    return busybox_image(lamina_registry, name="sandbox/busybox", rootfs=busybox_rootfs).reference


@pytest.fixture
def host_server() -> Iterator[LoopbackServer]:
    with loopback_server() as server:
        yield server


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteHost]:
    with remote_host({"pkg.txt": "package index v1\n"}, tmp_path) as host:
        yield host


def _build(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dockerfile: str, *args: str, out: str = "out"
) -> tuple[int, str]:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    dest = tmp_path / out
    rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), "--explain-cache",
               "--output", f"type=local,dest={dest}", *args, str(context)])  # fmt: skip
    _, err = capsys.readouterr()
    return rc, err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_default_run_reaches_the_outside_but_not_the_hosts_loopback(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_server: LoopbackServer, remote: RemoteHost
) -> None:
    dockerfile = (
        f"FROM {base}\n"
        f"RUN {WGET} {remote.url('pkg.txt')} > /remote.txt"
        f" && ({WGET} http://127.0.0.1:{host_server.port}/ || {WGET} http://10.0.2.2:{host_server.port}/"
        " || echo unreachable) > /host.txt\n"
    )
    rc, err = _build(capsys, tmp_path, dockerfile)
    assert rc == 0, err
    assert (tmp_path / "out" / "remote.txt").read_text() == "package index v1\n"
    assert (tmp_path / "out" / "host.txt").read_text() == "unreachable\n"
    assert host_server.hits == 0
    assert lamina_namespaces() == []


def test_host_network_needs_the_entitlement(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_server: LoopbackServer
) -> None:
    dockerfile = f"FROM {base}\nRUN --network=host {WGET} http://127.0.0.1:{host_server.port}/ > /host.txt\n"
    rc, err = _build(capsys, tmp_path, dockerfile)
    assert rc == 1
    assert _errors(err) == [
        "error: Dockerfile:2: RUN --network=host needs --allow network.host (network.host is not allowed)"
    ]
    rc, err = _build(capsys, tmp_path, f"FROM {base}\nRUN true\n", "--network", "host")
    assert rc == 1
    assert _errors(err) == ["error: --network host needs --allow network.host (network.host is not allowed)"]
    assert host_server.hits == 0
    rc, err = _build(capsys, tmp_path, dockerfile, "--allow", "security.insecure,network.host")
    assert rc == 0, err
    assert (tmp_path / "out" / "host.txt").read_text() == "host-secret\n" and host_server.hits == 1
    rc, err = _build(capsys, tmp_path, dockerfile, "--allow", "network.hots")
    assert rc == 1 and _errors(err) == [
        "error: --allow: unknown entitlement 'network.hots': use network.host or security.insecure"
    ]


def test_insecure_needs_the_entitlement_and_keys_apart(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = f"FROM {base}\nRUN echo built > /mode.txt\n"
    insecure = f"FROM {base}\nRUN --security=insecure echo built > /mode.txt\n"
    assert _build(capsys, tmp_path, plain)[0] == 0
    rc, err = _build(capsys, tmp_path, insecure)
    assert rc == 1 and _errors(err) == [
        "error: Dockerfile:2: RUN --security=insecure needs --allow security.insecure "
        "(security.insecure is not allowed)"
    ]
    rc, err = _build(capsys, tmp_path, insecure, "--allow", "security.insecure")
    assert rc == 0, err
    assert _miss_reason(err) == "security mode changed (sandbox -> insecure)"


def _miss_reason(err: str) -> str | None:
    """The --explain-cache table's WHY of the one RUN step when it missed; None when it was CACHED."""
    match = re.search(r"^\[\S+ \d+/\d+\] RUN .*?\s{2,}(CACHED|MISS)\s{2,}(.*)$", err, re.M)
    assert match is not None, err
    return None if match.group(1) == "CACHED" else match.group(2)


def test_the_effective_network_mode_is_in_the_cache_key(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = f"FROM {base}\nRUN ls /sys/class/net > /net.txt\n"
    rc, err = _build(capsys, tmp_path, dockerfile, "--network", "none", out="none")
    assert rc == 0, err
    assert (tmp_path / "none" / "net.txt").read_text().split() == ["lo"]
    rc, err = _build(capsys, tmp_path, dockerfile, out="default")
    assert rc == 0, err
    assert _miss_reason(err) == "network mode changed (none -> default)"
    assert (tmp_path / "default" / "net.txt").read_text().split() == ["lo", "tap0"]
    rc, err = _build(capsys, tmp_path, dockerfile, "--network", "default", out="again")
    assert rc == 0 and _miss_reason(err) is None
    rc, err = _build(capsys, tmp_path, f"FROM {base}\nRUN --network=none ls /sys/class/net > /net.txt\n", out="rn")
    assert rc == 0 and _miss_reason(err) is None  # same effective mode as --network none

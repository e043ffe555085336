"""The network part of runtime_config: which namespace a RUN joins and what /sys it gets (pure, no root)."""

from __future__ import annotations

import pytest

from lamina.build.worker import RunSpec, runtime_config

HOST_LIMITS = {"RLIMIT_NOFILE": (1024, 20000)}


def _config(**fields: object) -> dict:
    return runtime_config(RunSpec(argv=("true",), **fields), "/r", host_limits=HOST_LIMITS)  # type: ignore[arg-type]


def _network_namespaces(cfg: dict) -> list[dict]:
    return [ns for ns in cfg["linux"]["namespaces"] if ns["type"] == "network"]


def _sys(cfg: dict) -> dict:
    (sys_mount,) = [m for m in cfg["mounts"] if m["destination"] == "/sys"]
    return sys_mount


@pytest.mark.parametrize(
    ("fields", "namespaces", "sys_type"),
    [
        ({"netns_path": "/run/netns/lamina-7-0a"}, [{"type": "network", "path": "/run/netns/lamina-7-0a"}], "sysfs"),
        ({"network": "none"}, [{"type": "network"}], "sysfs"),
        ({"network": "host"}, [], "bind"),
    ],
)
def test_each_mode_gets_its_namespace_and_sysfs(fields: dict, namespaces: list[dict], sys_type: str) -> None:
    cfg = _config(**fields)
    assert _network_namespaces(cfg) == namespaces
    sys_mount = _sys(cfg)
    assert sys_mount["type"] == sys_type and "ro" in sys_mount["options"]
    if sys_type == "sysfs":  # a fresh sysfs: never the host's /sys bound in
        assert sys_mount["source"] == "sysfs"


def test_the_default_is_the_sandbox_and_needs_a_prepared_namespace() -> None:
    assert RunSpec(argv=("true",)).network == "sandbox"
    with pytest.raises(ValueError, match="'sandbox' needs netns_path"):
        _config()


def test_generated_hosts_and_resolv_conf_are_bound_read_only() -> None:
    cfg = _config(netns_path="/run/netns/x", hosts_file="/state/etc/hosts", resolv_conf="/state/etc/resolv.conf")
    binds = {m["destination"]: m for m in cfg["mounts"] if m["destination"].startswith("/etc/")}
    assert binds["/etc/hosts"]["source"] == "/state/etc/hosts"
    assert binds["/etc/resolv.conf"]["source"] == "/state/etc/resolv.conf"
    assert all("ro" in m["options"] for m in binds.values())

"""runtime_config's security part: what the sandbox and insecure modes put into config.json (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.worker import RunSpec, runtime_config
from lamina.build.worker.seccomp import LinuxSeccomp, SyscallRule
from lamina.build.worker.security import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_PIDS_LIMIT,
    MASKED_PATHS,
    READONLY_PATHS,
    capabilities_of_mask,
)
from lamina.build.worker.security_host import free_loop_device, held_capabilities

HOST = {"RLIMIT_NOFILE": (1024, 20000)}
FILTER = LinuxSeccomp("SCMP_ACT_ERRNO", 1, ("SCMP_ARCH_X86_64",), (), (SyscallRule(("read",), "SCMP_ACT_ALLOW"),))


def config(cgroups_path: str | None = "lamina-0123", **fields: object) -> dict:
    fields.setdefault("argv", ("/bin/sh", "-c", "true"))
    fields.setdefault("network", "none")
    spec = RunSpec(**fields)  # type: ignore[arg-type]
    return runtime_config(spec, "/state/rootfs", host_limits=HOST, cgroups_path=cgroups_path)


def sys_mount(cfg: dict) -> dict:
    (mount,) = [m for m in cfg["mounts"] if m["destination"] == "/sys"]
    return mount


def test_sandbox_defaults() -> None:
    cfg = config(seccomp=FILTER)
    process, linux = cfg["process"], cfg["linux"]
    assert process["noNewPrivileges"] is True
    assert process["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert process["capabilities"]["effective"] == list(DEFAULT_CAPABILITIES)
    assert process["capabilities"]["ambient"] == process["capabilities"]["inheritable"] == []
    assert linux["seccomp"] == FILTER.to_json()
    assert linux["maskedPaths"] == list(MASKED_PATHS) and linux["readonlyPaths"] == list(READONLY_PATHS)
    assert {"/proc/interrupts", "/proc/kcore", "/proc/keys", "/sys/firmware"} <= set(MASKED_PATHS)
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": DEFAULT_PIDS_LIMIT}}
    assert linux["cgroupsPath"] == "lamina-0123"
    assert "devices" not in linux
    assert "ro" in sys_mount(cfg)["options"]
    assert cfg["hostname"] == "buildkitsandbox"
    user = config(uid=1000, gid=1000)["process"]
    assert user["capabilities"]["effective"] == user["capabilities"]["permitted"] == []
    assert user["noNewPrivileges"] is True
    assert "seccomp" not in config()["linux"]  # the executor fills the filter in; runtime_config stays pure


def test_pids_limit_and_cgroup_path_are_optional() -> None:
    assert config(pids_limit=64)["linux"]["resources"]["pids"] == {"limit": 64}
    cfg = config(cgroups_path=None, pids_limit=None)
    assert "pids" not in cfg["linux"]["resources"] and "cgroupsPath" not in cfg["linux"]
    with pytest.raises(ValueError, match="pids_limit must be at least 1 or None, got 0"):
        RunSpec(argv=("true",), pids_limit=0)


def test_insecure_lifts_each_restriction() -> None:
    cfg = config(security="insecure", uid=1000, gid=1000, loop_devices=3,
                 insecure_capabilities=("CAP_SYS_ADMIN", "CAP_NET_ADMIN"))  # fmt: skip
    process, linux = cfg["process"], cfg["linux"]
    assert process["noNewPrivileges"] is False
    caps = process["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["ambient"] == ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    assert caps["permitted"] == caps["inheritable"] == ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    assert "seccomp" not in linux
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    assert "ro" not in sys_mount(cfg)["options"] and "rw" in sys_mount(cfg)["options"]
    devices = {d["path"]: (d["type"], d["major"], d["minor"]) for d in linux["devices"]}
    assert devices["/dev/fuse"] == ("c", 10, 229) and devices["/dev/kvm"] == ("c", 10, 232)
    assert devices["/dev/net/tun"] == ("c", 10, 200) and devices["/dev/loop-control"] == ("c", 10, 237)
    assert [p for p in devices if p.startswith("/dev/loop") and p[9:].isdigit()] == [f"/dev/loop{i}" for i in range(3)]
    assert linux["resources"]["devices"] == [
        {"allow": True, "type": "c", "access": "rwm"},
        {"allow": True, "type": "b", "access": "rwm"},
    ]
    assert linux["resources"]["pids"] == {"limit": DEFAULT_PIDS_LIMIT}  # a resource bound, not a privilege
    assert config(security="insecure")["process"]["capabilities"]["bounding"] == list(ALL_CAPABILITIES)
    explicit = config(security="insecure", no_new_privileges=True)["process"]
    assert explicit["noNewPrivileges"] is True


def test_invalid_security_specs() -> None:
    with pytest.raises(ValueError, match="unknown security mode 'privileged': use sandbox or insecure"):
        RunSpec(argv=("true",), security="privileged")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seccomp must be None for security 'insecure'"):
        RunSpec(argv=("true",), security="insecure", seccomp=FILTER)


def test_capability_masks_and_host_queries(tmp_path: Path) -> None:
    assert len(ALL_CAPABILITIES) == 41 and ALL_CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert capabilities_of_mask(0xA80425FB) == tuple(sorted(DEFAULT_CAPABILITIES, key=ALL_CAPABILITIES.index))
    assert capabilities_of_mask(1 << 45 | 1) == ("CAP_CHOWN",)  # bits without a name are left out
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000200001\n")
    assert held_capabilities(status) == ("CAP_CHOWN", "CAP_SYS_ADMIN")
    status.write_text("Name:\tx\n")
    with pytest.raises(RuntimeError, match="no CapEff line"):
        held_capabilities(status)
    assert free_loop_device(tmp_path / "no-loop-control") == 0

"""runtime_config: the pure RunSpec -> runc config.json function (no root, no runc needed)."""

from __future__ import annotations

import resource

import pytest

from lamina.build.worker import Mount, RunSpec, runtime_config
from lamina.build.worker.runtime_spec import DEFAULT_CAPABILITIES, DEFAULT_ENV_PATH

HOST = {"RLIMIT_NOFILE": (1024, 20000), "RLIMIT_NPROC": (resource.RLIM_INFINITY, resource.RLIM_INFINITY)}


def config(**fields: object) -> dict:
    fields.setdefault("argv", ("/bin/sh", "-c", "true"))
    if fields.get("network", "sandbox") == "sandbox":
        fields.setdefault("netns_path", "/run/netns/lamina-1-ab")
    return runtime_config(RunSpec(**fields), "/state/rootfs", host_limits=HOST)  # type: ignore[arg-type]


def mount(cfg: dict, destination: str) -> dict:
    matches = [m for m in cfg["mounts"] if m["destination"] == destination]
    assert len(matches) == 1, destination
    return matches[0]


def test_process() -> None:
    cfg = config(env=("A=1",), cwd="/work", uid=1000, gid=1000, additional_gids=(10, 20))
    process = cfg["process"]
    assert process["terminal"] is False
    assert process["args"] == ["/bin/sh", "-c", "true"]
    assert process["env"] == [DEFAULT_ENV_PATH, "A=1"]
    assert process["cwd"] == "/work"
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
    assert process["noNewPrivileges"] is True  # the sandbox default; security.py's tests cover the modes
    assert cfg["root"] == {"path": "/state/rootfs", "readonly": False}
    assert cfg["ociVersion"].startswith("1.0")
    assert config(env=("PATH=/opt/bin",))["process"]["env"] == ["PATH=/opt/bin"]


def test_capabilities_are_dockers_and_non_root_holds_none() -> None:
    assert len(DEFAULT_CAPABILITIES) == 14 and "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES
    root = config()["process"]["capabilities"]
    assert root["bounding"] == root["effective"] == root["permitted"] == list(DEFAULT_CAPABILITIES)
    assert root["ambient"] == [] and root["inheritable"] == []
    user = config(uid=1000)["process"]["capabilities"]
    assert user["bounding"] == list(DEFAULT_CAPABILITIES)
    assert user["effective"] == user["permitted"] == []


def test_rlimits_never_exceed_the_hosts_hard_limit() -> None:
    assert config()["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]
    cfg = config(rlimits=(("RLIMIT_NOFILE", 512, 4096), ("RLIMIT_NPROC", 100, 200)))
    assert cfg["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 512},
        {"type": "RLIMIT_NPROC", "hard": 200, "soft": 100},
    ]
    with pytest.raises(ValueError, match="unknown rlimit 'RLIMIT_BOGUS'"):
        config(rlimits=(("RLIMIT_BOGUS", 1, 1),))


def test_real_host_limits_are_read() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cfg = runtime_config(RunSpec(argv=("true",), network="host"), "/r")
    (nofile,) = cfg["process"]["rlimits"]
    expected = 1 << 20 if hard == resource.RLIM_INFINITY else min(1 << 20, hard)
    assert nofile == {"type": "RLIMIT_NOFILE", "hard": expected, "soft": expected}


def test_mounts_and_namespaces() -> None:
    cfg = config(mounts=(Mount("/cache", "/host/cache", options=("rbind", "rw")),))
    assert [m["destination"] for m in cfg["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/cache",
    ]
    assert mount(cfg, "/dev")["type"] == "tmpfs"
    assert "ro" in mount(cfg, "/sys")["options"]
    assert mount(cfg, "/etc/hosts") == {
        "destination": "/etc/hosts",
        "type": "bind",
        "source": "/etc/hosts",
        "options": ["rbind", "ro"],
    }
    assert "ro" in mount(cfg, "/etc/resolv.conf")["options"]
    assert mount(cfg, "/cache")["options"] == ["rbind", "rw"]
    kinds = [ns["type"] for ns in cfg["linux"]["namespaces"]]
    assert kinds == ["mount", "pid", "ipc", "uts", "network"]  # the sandbox's namespace: see test_worker_netspec
    assert "cgroupsPath" not in cfg["linux"]  # the executor names one per container
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="argv must not be empty"):
        RunSpec(argv=())
    with pytest.raises(ValueError, match="cwd must be absolute, got 'work'"):
        RunSpec(argv=("true",), cwd="work")
    with pytest.raises(ValueError, match="unknown network mode 'bridge'"):
        RunSpec(argv=("true",), network="bridge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="netns_path is only for network 'sandbox', not 'host'"):
        RunSpec(argv=("true",), network="host", netns_path="/run/netns/x")
    with pytest.raises(ValueError, match="'sandbox' needs netns_path"):
        runtime_config(RunSpec(argv=("true",)), "/r")

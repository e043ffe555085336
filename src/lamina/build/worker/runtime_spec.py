"""A RUN step's container as data: :class:`RunSpec` in, runc's ``config.json`` out, one pure function.

The generated bundle config (OCI runtime-spec config.md, config-linux.md) matches what Docker and
BuildKit give a build container: Docker's default capability set, masked and read-only /proc paths,
tmpfs /dev with pts/shm/mqueue, /sys read-only, the host's /etc/hosts and /etc/resolv.conf bound
read-only, mount/pid/ipc/uts namespaces and a network namespace only for ``network="none"``. There
are no cgroup limits, and rlimits never exceed the host's own hard limits, because runc fails to
start a container asking for more (here RLIMIT_NOFILE is capped at 20000 and root cannot raise it).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_ENV_PATH",
    "Mount",
    "RunSpec",
    "host_rlimits",
    "runtime_config",
]

OCI_VERSION = "1.0.2"
DEFAULT_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby/oci/caps/defaults.go: the capabilities every Docker container (and BuildKit RUN) gets.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# moby/oci/defaults.go
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# BuildKit's default (executor/oci/spec.go): a high open-files limit, capped below by the host's.
_DEFAULT_RLIMITS = (("RLIMIT_NOFILE", 1 << 20, 1 << 20),)


@dataclass(frozen=True, slots=True)
class Mount:
    """An extra mount (runtime-spec config.md#mounts), e.g. a cache or secret mount from the solver."""

    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ("rbind", "ro")

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything that decides how a RUN step's process is started (not where its rootfs is)."""

    argv: tuple[str, ...]
    env: tuple[str, ...] = ()  # "K=V"; a PATH is added when missing, as Docker does
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = "buildkitsandbox"  # what BuildKit calls its build containers; some scripts look
    network: Literal["host", "none"] = "host"
    mounts: tuple[Mount, ...] = ()
    rlimits: tuple[tuple[str, int, int], ...] = field(default=_DEFAULT_RLIMITS)  # (name, soft, hard)
    hosts_file: str = "/etc/hosts"  # host files bound read-only into the container
    resolv_conf: str = "/etc/resolv.conf"
    # Docker and BuildKit leave setuid working in RUN (sudo, su, ping); opt in to forbid it.
    no_new_privileges: bool = False

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("RunSpec.argv must not be empty")
        if not self.cwd.startswith("/"):
            raise ValueError(f"RunSpec.cwd must be absolute, got {self.cwd!r}")
        if self.network not in ("host", "none"):
            raise ValueError(f"unknown network mode {self.network!r}: use host or none")


def host_rlimits() -> dict[str, tuple[int, int]]:
    """The calling process's (soft, hard) limits by OCI name; a container may not exceed them."""
    limits = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            soft, hard = resource.getrlimit(getattr(resource, name))
            limits[name] = (soft, hard)
    return limits


def _rlimits(requested: tuple[tuple[str, int, int], ...], host: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for name, soft, hard in requested:
        if name not in host:
            raise ValueError(f"unknown rlimit {name!r}")
        host_hard = host[name][1]
        if host_hard != resource.RLIM_INFINITY:
            hard = host_hard if hard < 0 else min(hard, host_hard)
            soft = host_hard if soft < 0 else min(soft, hard)
        out.append({"type": name, "hard": hard, "soft": soft})
    return out


def _with_path(env: tuple[str, ...]) -> list[str]:
    if any(item.startswith("PATH=") for item in env):
        return list(env)
    return [DEFAULT_ENV_PATH, *env]


def runtime_config(
    spec: RunSpec, rootfs: str | os.PathLike[str], *, host_limits: dict[str, tuple[int, int]] | None = None
) -> dict[str, Any]:
    """runc's config.json for ``spec`` with ``rootfs`` as root. Pure: the host limits are an input."""
    limits = host_rlimits() if host_limits is None else host_limits
    caps = list(DEFAULT_CAPABILITIES)
    # A non-root process starts with no effective or permitted capabilities, as in Docker.
    held = caps if spec.uid == 0 else []
    user: dict[str, Any] = {"uid": spec.uid, "gid": spec.gid}
    if spec.additional_gids:
        user["additionalGids"] = list(spec.additional_gids)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        # A fresh sysfs needs its own network namespace; a read-only bind of the host's works in both modes.
        {
            "destination": "/sys",
            "type": "bind",
            "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
        },
        {"destination": "/etc/hosts", "type": "bind", "source": spec.hosts_file, "options": ["rbind", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": spec.resolv_conf, "options": ["rbind", "ro"]},
    ]
    mounts.extend(m.to_json() for m in spec.mounts)
    namespaces = [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}]
    if spec.network == "none":
        namespaces.append({"type": "network"})
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": user,
            "args": list(spec.argv),
            "env": _with_path(spec.env),
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": held,
                "permitted": held,
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": _rlimits(spec.rlimits, limits),
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": os.fspath(rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }

"""A RUN step's container as data: :class:`RunSpec` in, runc's ``config.json`` out, one pure function.

The generated bundle config (OCI runtime-spec config.md, config-linux.md) matches what Docker and
BuildKit give a build container: Docker's default capability set, masked and read-only /proc paths,
tmpfs /dev with pts/shm/mqueue, /sys read-only, /etc/hosts and /etc/resolv.conf bound read-only,
mount/pid/ipc/uts namespaces and a network namespace: the prepared one at ``netns_path`` for
``network="sandbox"`` (the worker's user-mode network, see ``usernet``), a new empty one (loopback
only) for ``"none"``, the host's for ``"host"``; a container with its own network namespace gets a
fresh read-only sysfs (its /sys/class/net shows its own interfaces), ``"host"`` a bind of the host's.
Rlimits never exceed the host's own hard limits, because runc fails to start a container asking for
more (here RLIMIT_NOFILE is capped at 20000 and root cannot raise it). The security mode (seccomp,
capabilities, noNewPrivileges, masked paths, devices, the pids limit) is :mod:`.security`'s part.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import Any, Literal

from .seccomp import LinuxSeccomp
from .security import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_PIDS_LIMIT, SecurityMode, apply_security

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
    # "sandbox": join the prepared namespace at netns_path (required); "none": new namespace, lo only;
    # "host": the host's namespace (the build needs --allow network.host).
    network: Literal["sandbox", "none", "host"] = "sandbox"
    netns_path: str | None = None
    mounts: tuple[Mount, ...] = ()
    rlimits: tuple[tuple[str, int, int], ...] = field(default=_DEFAULT_RLIMITS)  # (name, soft, hard)
    ulimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: replace the rlimits of the same name, or add one
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host (hostname, IP): "IP\tHOST" lines after the hosts file
    shm_size: int | None = None  # --shm-size in bytes; None: 64 MiB, as BuildKit and Docker
    # Files bound read-only into the container; for sandbox/none the RuncExecutor puts its generated ones here.
    hosts_file: str = "/etc/hosts"
    resolv_conf: str = "/etc/resolv.conf"
    # "sandbox": the security.py defaults (Docker's); "insecure": RUN --security=insecure (--allow security.insecure).
    security: SecurityMode = "sandbox"
    # The linux.seccomp filter; the RuncExecutor fills it in for "sandbox" (it is never run unconfined).
    seccomp: LinuxSeccomp | None = None
    # None: True for "sandbox" (setuid binaries cannot raise privileges), False for "insecure".
    no_new_privileges: bool | None = None
    pids_limit: int | None = DEFAULT_PIDS_LIMIT  # in the container's own cgroup; None: unlimited
    loop_devices: int = 8  # insecure mode's /dev/loopN nodes; the executor counts the host's free one
    # What insecure mode grants: the executor puts the capabilities the builder itself holds (BuildKit's).
    insecure_capabilities: tuple[str, ...] = ALL_CAPABILITIES

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("RunSpec.argv must not be empty")
        if not self.cwd.startswith("/"):
            raise ValueError(f"RunSpec.cwd must be absolute, got {self.cwd!r}")
        if self.network not in ("sandbox", "none", "host"):
            raise ValueError(f"unknown network mode {self.network!r}: use sandbox, none or host")
        if self.netns_path is not None and self.network != "sandbox":
            raise ValueError(f"RunSpec.netns_path is only for network 'sandbox', not {self.network!r}")
        if self.security not in ("sandbox", "insecure"):
            raise ValueError(f"unknown security mode {self.security!r}: use sandbox or insecure")
        if self.security == "insecure" and self.seccomp is not None:
            raise ValueError("RunSpec.seccomp must be None for security 'insecure' (it runs unfiltered)")
        if self.pids_limit is not None and self.pids_limit < 1:
            raise ValueError(f"RunSpec.pids_limit must be at least 1 or None, got {self.pids_limit}")
        if self.no_new_privileges is None:
            object.__setattr__(self, "no_new_privileges", self.security == "sandbox")


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


def _with_ulimits(
    rlimits: tuple[tuple[str, int, int], ...], ulimits: tuple[tuple[str, int, int], ...]
) -> tuple[tuple[str, int, int], ...]:
    """The default rlimits with each ``--ulimit`` replacing the one of its name (Docker's and BuildKit's rule)."""
    wanted = {name for name, _, _ in ulimits}
    return (*(r for r in rlimits if r[0] not in wanted), *ulimits)


def _with_path(env: tuple[str, ...]) -> list[str]:
    if any(item.startswith("PATH=") for item in env):
        return list(env)
    return [DEFAULT_ENV_PATH, *env]


def _sysfs(network: str) -> dict[str, Any]:
    """A fresh read-only sysfs in an own network namespace (the kernel refuses one in the host's)."""
    options = ["nosuid", "noexec", "nodev", "ro"]
    if network == "host":
        return {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", *options]}
    return {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": options}


def _network_namespace(spec: RunSpec) -> dict[str, Any]:
    if spec.network == "none":
        return {"type": "network"}
    if spec.netns_path is None:
        raise ValueError("RunSpec.network 'sandbox' needs netns_path: the executor prepares the namespace")
    return {"type": "network", "path": spec.netns_path}


def runtime_config(
    spec: RunSpec,
    rootfs: str | os.PathLike[str],
    *,
    host_limits: dict[str, tuple[int, int]] | None = None,
    cgroups_path: str | None = None,
) -> dict[str, Any]:
    """runc's config.json for ``spec`` with ``rootfs`` as root. Pure: the host limits are an input.

    ``cgroups_path`` (relative: under runc's own cgroup) is the container's cgroup, where the pids
    limit applies; unique per container so concurrent RUNs never share one."""
    limits = host_rlimits() if host_limits is None else host_limits
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
            "options": ["nosuid", "noexec", "nodev", "mode=1777",
                        f"size={spec.shm_size}" if spec.shm_size else "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        _sysfs(spec.network),
        {"destination": "/etc/hosts", "type": "bind", "source": spec.hosts_file, "options": ["rbind", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": spec.resolv_conf, "options": ["rbind", "ro"]},
    ]
    mounts.extend(m.to_json() for m in spec.mounts)
    namespaces = [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}]
    if spec.network != "host":
        namespaces.append(_network_namespace(spec))
    config = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": user,
            "args": list(spec.argv),
            "env": _with_path(spec.env),
            "cwd": spec.cwd,
            "rlimits": _rlimits(_with_ulimits(spec.rlimits, spec.ulimits), limits),
        },
        "root": {"path": os.fspath(rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {"namespaces": namespaces},
    }
    return apply_security(
        config,
        mode=spec.security,
        uid=spec.uid,
        insecure_capabilities=spec.insecure_capabilities,
        seccomp=None if spec.seccomp is None else spec.seccomp.to_json(),
        no_new_privileges=bool(spec.no_new_privileges),
        pids_limit=spec.pids_limit,
        loop_devices=spec.loop_devices,
        cgroups_path=cgroups_path,
    )

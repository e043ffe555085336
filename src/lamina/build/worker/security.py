"""What a RUN step's security mode puts into runc's config.json (pure data, no I/O).

``sandbox`` (the default) is Docker's and BuildKit's default container: Docker's capability set (none
held by a non-root process), the seccomp filter the executor loads (see :mod:`.seccomp`),
``noNewPrivileges``, Docker's masked and read-only /proc and /sys paths (moby oci/defaults.go), a device
cgroup that denies every device but runc's defaults (null, zero, full, random, urandom, tty, ptmx, pts,
and mknod without access), and a pids limit in the container's own cgroup.

``insecure`` (``RUN --security=insecure``, granted by ``--allow security.insecure``) is BuildKit's
``WithInsecureSpec`` (util/entitlements/security): every capability the builder holds (BuildKit's
``cap.Current``) in every set, so also for a non-root user through the ambient set; no seccomp filter,
no ``noNewPrivileges``, nothing masked or read-only, /sys writable, every character and block device
allowed, and the devices BuildKit creates in that mode (kmsg, cuse, fuse, kvm, net/tun, loop-control
and loop0 up to the first free loop device + 7).
The pids limit stays: it is a resource bound, not a privilege.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PIDS_LIMIT",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "SecurityMode",
    "apply_security",
    "capabilities_of_mask",
    "insecure_devices",
]

SecurityMode = Literal["sandbox", "insecure"]

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

# Every capability Linux defines, in bit order (capability.h, 0 .. CAP_CHECKPOINT_RESTORE = 40).
ALL_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# moby/oci/defaults.go (current): /proc/interrupts and /sys/devices/virtual/powercap joined in 2024.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
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

# BuildKit and Docker set no pids limit; podman's default is 2048. 4096 stops a fork bomb within
# milliseconds and leaves a parallel compile (threads count too) far from the bound.
DEFAULT_PIDS_LIMIT = 4096

# BuildKit's WithInsecureSpec devices: (path, major, minor), all character devices.
_INSECURE_CHAR_DEVICES = (
    ("/dev/kmsg", 1, 11),
    ("/dev/cuse", 10, 203),
    ("/dev/fuse", 10, 229),
    ("/dev/kvm", 10, 232),
    ("/dev/net/tun", 10, 200),
    ("/dev/loop-control", 10, 237),
)
_LOOP_MAJOR = 7


def insecure_devices(loop_devices: int) -> list[dict[str, Any]]:
    """The ``linux.devices`` of insecure mode: BuildKit's six and /dev/loop0 .. loop<loop_devices - 1>."""
    devices = [
        {"path": path, "type": "c", "major": major, "minor": minor} for path, major, minor in _INSECURE_CHAR_DEVICES
    ]
    devices += [{"path": f"/dev/loop{i}", "type": "b", "major": _LOOP_MAJOR, "minor": i} for i in range(loop_devices)]
    return devices


def capabilities_of_mask(mask: int) -> tuple[str, ...]:
    """The names of the capabilities set in a /proc/PID/status ``Cap*`` mask (unnamed bits are left out)."""
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


def _capabilities(mode: SecurityMode, uid: int, insecure: tuple[str, ...]) -> dict[str, list[str]]:
    if mode == "insecure":
        every = list(insecure)
        return {"bounding": every, "effective": every, "permitted": every, "inheritable": every, "ambient": every}
    caps = list(DEFAULT_CAPABILITIES)
    # A non-root process starts with no effective or permitted capabilities, as in Docker.
    held = caps if uid == 0 else []
    return {"bounding": caps, "effective": held, "permitted": held, "inheritable": [], "ambient": []}


def _writable(mount: dict[str, Any]) -> dict[str, Any]:
    options = [option for option in mount.get("options", []) if option != "ro"]
    return {**mount, "options": [*options, "rw"]}


def apply_security(
    config: dict[str, Any],
    *,
    mode: SecurityMode,
    uid: int,
    insecure_capabilities: tuple[str, ...] = ALL_CAPABILITIES,
    seccomp: dict[str, Any] | None,
    no_new_privileges: bool,
    pids_limit: int | None,
    loop_devices: int,
    cgroups_path: str | None,
) -> dict[str, Any]:
    """``config`` (runc's config.json as built by ``runtime_config``) with ``mode``'s security settings."""
    process = {
        **config["process"],
        "capabilities": _capabilities(mode, uid, insecure_capabilities),
        "noNewPrivileges": no_new_privileges,
    }
    linux = dict(config["linux"])
    resources: dict[str, Any] = dict(linux.get("resources", {}))
    if mode == "insecure":
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        linux["devices"] = insecure_devices(loop_devices)
        resources["devices"] = [
            {"allow": True, "type": "c", "access": "rwm"},
            {"allow": True, "type": "b", "access": "rwm"},
        ]
        mounts = [_writable(m) if m["destination"] == "/sys" else m for m in config["mounts"]]
    else:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        resources["devices"] = [{"allow": False, "access": "rwm"}]  # runc then allows its default devices
        mounts = config["mounts"]
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if pids_limit is not None:
        resources["pids"] = {"limit": pids_limit}
    linux["resources"] = resources
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    return {**config, "process": process, "mounts": mounts, "linux": linux}

"""The host's part of a RUN's security mode, which only the worker can know: the seccomp filter for
``sandbox`` (the profile found by :func:`.seccomp.find_profile`, loaded and converted once per process)
and, for ``insecure``, the capabilities the builder holds and how many /dev/loopN nodes to create
(BuildKit: the first free one + 7).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import replace
from pathlib import Path

from .runtime_spec import RunSpec
from .seccomp import LinuxSeccomp, default_seccomp, find_profile
from .security import DEFAULT_CAPABILITIES, capabilities_of_mask

__all__ = ["free_loop_device", "held_capabilities", "prepare_security", "sandbox_seccomp"]

_LOOP_CTL_GET_FREE = 0x4C82  # linux/loop.h
_EXTRA_LOOPS = 8  # BuildKit's WithInsecureSpec creates loop0 .. loop<free + 7>


def sandbox_seccomp(explicit: str | os.PathLike[str] | None = None) -> LinuxSeccomp:
    """The filter of a sandboxed RUN (bounding set: Docker's defaults, the same for every user)."""
    return default_seccomp(find_profile(explicit), DEFAULT_CAPABILITIES)


def free_loop_device(control: Path = Path("/dev/loop-control")) -> int:
    """The number of the first free loop device, or 0 when the host has no loop control device."""
    try:
        fd = os.open(control, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return max(0, fcntl.ioctl(fd, _LOOP_CTL_GET_FREE))
    except OSError:
        return 0
    finally:
        os.close(fd)


def held_capabilities(status: Path = Path("/proc/self/status")) -> tuple[str, ...]:
    """The builder's own effective capabilities: all that insecure mode can hand on (runc cannot grant more)."""
    for line in status.read_text(encoding="ascii").splitlines():
        if line.startswith("CapEff:"):
            return capabilities_of_mask(int(line.split()[1], 16))
    raise RuntimeError(f"no CapEff line in {status}: cannot tell which capabilities insecure mode may grant")


def prepare_security(spec: RunSpec, explicit_profile: str | os.PathLike[str] | None = None) -> RunSpec:
    """``spec`` with what the host decides filled in: the seccomp filter or the loop device count."""
    if spec.security == "insecure":
        return replace(spec, loop_devices=free_loop_device() + _EXTRA_LOOPS, insecure_capabilities=held_capabilities())
    if spec.seccomp is None:
        return replace(spec, seccomp=sandbox_seccomp(explicit_profile))
    return spec

"""A RUN's prepared mounts as runc mounts, and the mountpoint stubs that must stay out of its layer.

Pure data in, data out (design habit 4): the executor prepares each ``RUN --mount`` on the host (a cache
directory, a bind source or its throwaway copy, a secret file, an ssh socket) and describes it as a
:class:`PreparedMount`; :func:`runc_mounts` turns the list into runtime-spec mounts (config.md#mounts)
appended after the container's own (/proc, /dev, /etc/hosts, ...); :func:`mount_stubs` lists the
mountpoints the runtime would create in the rootfs.

Stubs, as BuildKit's ``executor.MountStubsCleaner`` with ``RemoveMountStubsRecursive`` (what the Dockerfile
frontend asks for): a mountpoint that did not exist before the RUN — and each parent it needed, up to the
first one that existed — never reaches the layer. That covers /etc/hosts and /etc/resolv.conf, the user's
mounts and ``RUN <<EOF`` scripts (/dev/pipes/...); runc's own /proc, /sys and /dev are kept, so the first
RUN on a base without them adds ``dev/ proc/ sys/`` (0755), as BuildKit's does. The snapshotter creates
the stubs in a lower dir of their own, so they are never written to the upper dir at all.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .runtime_spec import Mount
from .snapshot import RUN_MOUNTPOINTS

__all__ = ["PreparedMount", "mount_stubs", "runc_mounts"]


@dataclass(frozen=True, slots=True)
class PreparedMount:
    """One mount ready for the runtime: ``source`` on the host (a path; unused for tmpfs) at ``target``."""

    target: str  # absolute, clean
    source: str
    kind: Literal["bind", "tmpfs"] = "bind"
    readonly: bool = True
    is_dir: bool = True  # the kind of mountpoint a bind needs (a file for a single-file bind, a secret, a socket)
    size: int | None = None  # tmpfs size in bytes

    def __post_init__(self) -> None:
        if not self.target.startswith("/") or posixpath.normpath(self.target) != self.target or self.target == "/":
            raise ValueError(f"mount target must be a clean absolute path other than /, got {self.target!r}")


def runc_mounts(prepared: Sequence[PreparedMount]) -> tuple[Mount, ...]:
    """The runtime-spec mounts of ``prepared``, shallow targets first (a stable sort by depth, as Docker and
    BuildKit order mounts, so a mount inside another one's target is not hidden by it). Binds are recursive
    (``rbind``) and private to the container; read-only ones also ``ro``. tmpfs mounts are ``nosuid,nodev``
    with ``size=`` when given (BuildKit's tmpfs mount)."""
    out = []
    for mount in sorted(prepared, key=lambda m: m.target.count("/")):
        if mount.kind == "tmpfs":
            options = ["nosuid", "nodev", "mode=1777"]
            if mount.size is not None:
                options.append(f"size={mount.size}")
            if mount.readonly:
                options.append("ro")
            out.append(Mount(destination=mount.target, source="tmpfs", type="tmpfs", options=tuple(options)))
        else:
            options = ["rbind", "rprivate", "ro" if mount.readonly else "rw"]
            out.append(Mount(destination=mount.target, source=mount.source, type="bind", options=tuple(options)))
    return tuple(out)


def mount_stubs(prepared: Sequence[PreparedMount], inline_files: Sequence[str] = ()) -> tuple[tuple[str, bool], ...]:
    """(rootfs-relative path, is_dir) of every mountpoint the RUN needs besides runc's own /proc, /sys and
    /dev: the hosts and resolv.conf binds, ``inline_files`` (``RUN <<EOF`` scripts) and ``prepared``."""
    stubs = list(RUN_MOUNTPOINTS)
    stubs.extend((path.lstrip("/"), False) for path in inline_files)
    stubs.extend((mount.target.lstrip("/"), mount.is_dir) for mount in prepared)
    return tuple(dict.fromkeys(stubs))

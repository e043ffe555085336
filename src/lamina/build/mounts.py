"""``RUN --mount`` values as plain frozen data: what the Dockerfile frontend puts on a :class:`RunStep`.

One class per mount type of BuildKit's Dockerfile frontend (``frontend/dockerfile/instructions/
commands_runmount.go`` parses them, ``dockerfile2llb/convert_runmount.go``, ``convert_secrets.go`` and
``convert_ssh.go`` turn them into LLB). Defaults are already applied when a value is made, as BuildKit's
converter applies them: a cache id defaults to the target as written, a secret's target to
``/run/secrets/<id>``, an ssh socket's to ``/run/buildkit/ssh_agent.<n>``; targets are absolute
(a relative one was joined with WORKDIR). Nothing here holds a secret's bytes or a socket's path:
those come per build from :mod:`lamina.build.secrets` and never reach a key, a layer or a log.

:func:`mount_key` is what a mount adds to its RUN's cache key (as a mount changes BuildKit's ExecOp
digest): its whole spec, never a secret's value or a cache directory's content. What a bind or a cache
``from=`` reads is added by the solver (:class:`MountFrom` names it; see :mod:`lamina.build.cachekey`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BindMount",
    "CacheMount",
    "MountFrom",
    "MountSources",
    "RunMount",
    "SecretMount",
    "Sharing",
    "SshMount",
    "TmpfsMount",
    "mount_key",
]

Sharing = Literal["shared", "private", "locked"]


@dataclass(frozen=True, slots=True)
class MountFrom:
    """Where a bind (or a cache mount's seed) reads from. All ``None``: the build context for a bind,
    an empty directory for a cache mount (BuildKit's ``emptyImageName``)."""

    stage: int | None = None  # from=<stage name or index>
    image: str | None = None  # from=<image reference>
    context: str | None = None  # from=<named build context> (--build-context NAME=DIR)

    @property
    def is_default(self) -> bool:
        return self.stage is None and self.image is None and self.context is None

    def describe(self) -> dict[str, Any] | None:
        """For a key: which kind of source (a stage by position would tie the key to the Dockerfile's
        layout; the stage's own key is the mount's ``input``)."""
        if self.stage is not None:
            return {"stage": True}
        if self.image is not None:
            return {"image": self.image}
        if self.context is not None:
            return {"context": self.context}
        return None


@dataclass(frozen=True, slots=True)
class CacheMount:
    """``type=cache``: a directory kept between builds in the local cache-mount store, by ``id``."""

    target: str
    id: str
    sharing: Sharing = "shared"
    readonly: bool = False
    source: str = "/"  # path inside ``origin`` that seeds a new cache directory
    origin: MountFrom = MountFrom()
    # Applied to a new, empty cache directory only, and only without ``source`` (BuildKit's
    # "settings cache mount permissions" mkdir); None: not given (0755, 0, 0).
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class BindMount:
    """``type=bind`` (the default type): ``source`` of ``origin`` at ``target``; ``readonly=False`` (rw)
    gives the RUN a throwaway copy whose writes are discarded (BuildKit's ForceNoOutput)."""

    target: str
    source: str = "/"
    origin: MountFrom = MountFrom()
    readonly: bool = True


@dataclass(frozen=True, slots=True)
class TmpfsMount:
    """``type=tmpfs``: an empty tmpfs for this RUN only; ``size`` in bytes (None: the kernel's default)."""

    target: str
    size: int | None = None
    readonly: bool = False  # ro: a read-only (so always empty) tmpfs, as BuildKit mounts it


@dataclass(frozen=True, slots=True)
class SecretMount:
    """``type=secret``: the build's secret ``id`` as a file at ``target`` and/or in variable ``env``."""

    id: str
    target: str | None  # None only with ``env`` (BuildKit mounts no file then)
    env: str | None = None
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class SshMount:
    """``type=ssh``: a socket at ``target`` that forwards to the build's ssh agent ``id``."""

    id: str
    target: str
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0


RunMount = CacheMount | BindMount | TmpfsMount | SecretMount | SshMount


@dataclass(frozen=True)
class MountSources:
    """What the solver hands the executor for a RUN with mounts: the materialised layers (bottom first)
    of each ``from=`` stage or image, and each mount's key input (see :mod:`lamina.build.cachekey`)."""

    lowers: Mapping[MountFrom, list[Path]] = field(default_factory=dict)
    inputs: tuple[str | None, ...] = ()


def mount_key(mount: RunMount) -> dict[str, Any]:
    """The mount's part of its RUN's cache key: its spec (no secret value, no cache content)."""
    if isinstance(mount, CacheMount):
        return {
            "type": "cache",
            "target": mount.target,
            "id": mount.id,
            "sharing": mount.sharing,
            "readonly": mount.readonly,
            "source": mount.source,
            "from": mount.origin.describe(),
            "mode": mount.mode,
            "uid": mount.uid,
            "gid": mount.gid,
        }
    if isinstance(mount, BindMount):
        return {
            "type": "bind",
            "target": mount.target,
            "source": mount.source,
            "from": mount.origin.describe(),
            "readonly": mount.readonly,
        }
    if isinstance(mount, TmpfsMount):
        return {"type": "tmpfs", "target": mount.target, "size": mount.size, "readonly": mount.readonly}
    if isinstance(mount, SecretMount):
        return {
            "type": "secret",
            "id": mount.id,
            "target": mount.target,
            "env": mount.env,
            "required": mount.required,
            "mode": mount.mode,
            "uid": mount.uid,
            "gid": mount.gid,
        }
    return {
        "type": "ssh",
        "id": mount.id,
        "target": mount.target,
        "required": mount.required,
        "mode": mount.mode,
        "uid": mount.uid,
        "gid": mount.gid,
    }


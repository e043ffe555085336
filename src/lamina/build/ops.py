"""The build graph: what the Dockerfile frontend hands to the solver, as plain frozen data.

The frontend (``lamina.build.dockerfile``) turns a Dockerfile, build args, target and the resolved base
image configs into a :class:`BuildGraph`: stages, each a base plus an ordered list of steps whose
variables are already expanded and whose environment, user and working directory are already
computed. The solver knows nothing of Dockerfile syntax; it only executes steps and derives cache
keys from them. Every field that affects a step's result is in the step (so a cache key can be a pure
function of it); ``line`` and ``created_by`` are for messages and image history only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lamina.oci import ContainerConfig, Platform

if TYPE_CHECKING:  # the mount types are loaded by the RUN --mount parser, when a RUN has mounts
    from lamina.build.mounts import RunMount

__all__ = [
    "BaseImage",
    "BuildGraph",
    "CopyStep",
    "MetaStep",
    "RunExtras",
    "RunStep",
    "Scratch",
    "Stage",
    "StageBase",
    "Step",
    "WorkdirStep",
]


@dataclass(frozen=True, slots=True)
class BaseImage:
    """``FROM ref``: an image in a registry, resolved for ``platform``."""

    ref: str  # as written after expansion, e.g. "localhost:5000/base/busybox:latest" or "busybox@sha256:..."


@dataclass(frozen=True, slots=True)
class Scratch:
    """``FROM scratch``: an empty root filesystem."""


@dataclass(frozen=True, slots=True)
class StageBase:
    """``FROM <earlier stage>``: continue from that stage's result."""

    stage: int


@dataclass(frozen=True, slots=True)
class RunExtras:
    """Build-wide settings of every RUN container from buildx flags; BuildKit keeps them in each ExecOp's
    meta, so they are part of a RUN's cache key (the builder sets them on each RunStep)."""

    hosts: tuple[tuple[str, str], ...] = ()  # --add-host: (hostname, IP) lines appended to /etc/hosts
    ulimits: tuple[tuple[str, int, int], ...] = ()  # --ulimit: ("RLIMIT_NOFILE", soft, hard); -1 = unlimited
    shm_size: int | None = None  # --shm-size: bytes of /dev/shm (default: the runtime's 64 MiB)
    hostname: str | None = None  # --build-arg BUILDKIT_SANDBOX_HOSTNAME (default: buildkitsandbox)


@dataclass(frozen=True, slots=True)
class RunStep:
    """``RUN``: execute ``argv`` in a container on the current root filesystem; its changes form a layer."""

    argv: tuple[str, ...]  # already wrapped in SHELL for the shell form, e.g. ("/bin/sh", "-c", "make")
    env: tuple[str, ...]  # "K=V", the image Env plus the ARGs in scope (as Docker exposes them to RUN)
    user: str  # "" = root; "name", "uid", "uid:gid", "name:group" (resolved by the worker in the rootfs)
    workdir: str  # absolute
    # default (the sandbox: own namespace, user-mode network) | none | host, from RUN --network; the builder
    # replaces "default" by the build's --network before solving, so the cache key holds the effective mode
    network: str = "default"
    security: str = "sandbox"  # sandbox | insecure (RUN --security; insecure needs --allow security.insecure)
    # HTTP_PROXY etc. from --build-arg, given to the container but, as in BuildKit, not part of the cache key
    proxy_env: tuple[str, ...] = ()
    # (absolute path, content): files the executor provides read-only, mode 0755, for this RUN only;
    # BuildKit runs a ``RUN <<EOF`` whose body starts with ``#!`` as /dev/pipes/EOF this way. Part of the key.
    inline_files: tuple[tuple[str, str], ...] = ()
    # RUN --mount values (cache, bind, tmpfs, secret, ssh; lamina.build.mounts), in Dockerfile order. Their
    # specs are part of the key, never a secret's value or a cache directory's content.
    mounts: tuple[RunMount, ...] = ()
    extras: RunExtras = field(default_factory=RunExtras)  # --add-host, --ulimit, --shm-size (part of the key)
    line: int = 0
    created_by: str = ""
    shown: str = ""  # the instruction as written (first line), for progress and error lines as BuildKit shows it


@dataclass(frozen=True, slots=True)
class CopyStep:
    """``COPY``/``ADD``: copy files from the context, an earlier stage or an image into the rootfs.

    ``sources`` are the expanded source patterns (relative to the context or the source root, globs
    allowed); ``dest`` is absolute (already resolved against WORKDIR; a trailing '/' is kept because
    it changes the meaning). ``heredocs`` are inline files (name, content) from ``COPY <<EOF``.
    """

    sources: tuple[str, ...]
    dest: str
    from_stage: int | None = None  # COPY --from=<stage>
    from_image: str | None = None  # COPY --from=<image ref>
    from_context: str | None = None  # COPY --from=<name of a --build-context NAME=DIR>: files from that dir
    chown: str | None = None  # "user[:group]" as written (expanded), resolved in the destination rootfs
    chmod: str | None = None  # octal ("755") or symbolic ("u+x,g-w"), applied to each source's mode
    # COPY --link as BuildKit merges it: the layer is made on an empty root and keyed without the parent;
    # the frontend sets it only when BuildKit links (no --chmod, no --chown by name)
    link: bool = False
    parents: bool = False  # COPY --parents: each source lands at DEST/<its path> (after a "/./" pivot)
    is_add: bool = False  # ADD: auto-extract local tar archives, fetch URLs, clone git repositories
    keep_git_dir: bool = False  # ADD --keep-git-dir: a git source keeps its .git directory
    # ADD --unpack: True unpacks a URL's archive too, False copies a local archive as it is; None: the
    # default (local archives unpacked, downloads not)
    unpack: bool | None = None
    heredocs: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()  # --exclude patterns (dockerignore syntax), matched against source paths
    checksum: str | None = None  # ADD --checksum: sha256:... of the one URL source, or a git commit (prefix)
    user: str = ""  # the USER in effect (files are owned by root unless --chown, as Docker does)
    workdir: str = "/"
    line: int = 0
    created_by: str = ""
    shown: str = ""  # the instruction as written (first line), for progress and error lines as BuildKit shows it


@dataclass(frozen=True, slots=True)
class WorkdirStep:
    """``WORKDIR``: create ``path`` if missing (owned by ``user`` as BuildKit does); makes a layer."""

    path: str  # absolute
    user: str = ""
    line: int = 0
    created_by: str = ""
    shown: str = ""  # the instruction as written (first line), for progress and error lines as BuildKit shows it


@dataclass(frozen=True, slots=True)
class MetaStep:
    """A config-only instruction (ENV, LABEL, CMD, ...): no filesystem change, an empty_layer history entry."""

    line: int = 0
    created_by: str = ""
    shown: str = ""  # the instruction as written (first line), for progress and error lines as BuildKit shows it


Step = RunStep | CopyStep | WorkdirStep | MetaStep


@dataclass(frozen=True, slots=True)
class Stage:
    """One build stage: its base, target platform and steps (variables expanded, config computed)."""

    index: int
    name: str | None
    base: BaseImage | Scratch | StageBase
    platform: Platform
    steps: tuple[Step, ...]
    config: ContainerConfig  # the stage's final container config (Env, Cmd, Entrypoint, Labels, ...)
    line: int = 0
    author: str | None = None  # MAINTAINER (the image config's top-level "author")


@dataclass(frozen=True, slots=True)
class BuildGraph:
    """Only the stages the target needs (others pruned), in dependency order; the target is last."""

    stages: tuple[Stage, ...]
    target: int  # index into stages
    warnings: tuple[str, ...] = field(default=())

    def stage(self, index: int) -> Stage:
        for stage in self.stages:
            if stage.index == index:
                return stage
        raise KeyError(index)

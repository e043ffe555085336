"""Preparing a RUN's ``--mount`` sources on the host, for the time of that one RUN.

:class:`RunMounts` (an async context manager) turns the step's mount values into
:class:`~lamina.build.worker.runmounts.PreparedMount` s plus the environment they add, and undoes it all
afterwards, as BuildKit's exec op mounts per execution:

- ``cache``: a directory of the :class:`~lamina.build.cachemounts.CacheMountStore`, locked for its
  sharing mode until the RUN ends; a new one is seeded from ``from=``/``source`` or made with
  ``mode``/``uid``/``gid`` (default 0755 root);
- ``bind``: the source inside the build context as BuildKit sees it after ``.dockerignore`` (a filtered
  directory is presented as a tree of hard links to the kept files), a ``from=`` stage's or image's root
  filesystem (an overlay view), or a named context; ``rw`` gets a throwaway copy, so writes vanish;
  symlinks in ``source`` resolve inside that root;
- ``tmpfs``: nothing on the host;
- ``secret``: the bytes from :class:`~lamina.build.secrets.BuildSecrets`, written to a 0700 directory in
  /dev/shm (never the state directory) with the mount's mode/uid/gid, and/or put in the RUN's environment
  (``env=``); a missing secret fails the RUN when ``required``, and is otherwise left out, as BuildKit does;
- ``ssh``: a socket with the mount's mode/uid/gid that forwards each connection to the build's agent
  (BuildKit forwards through its session the same way), removed when the RUN ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lamina.build.cachemounts import CacheMountError, CacheMountStore, Seed, copy_tree
from lamina.build.context import BuildContext, ContextError, Entry, SourceTree
from lamina.build.mounts import (
    BindMount,
    CacheMount,
    MountFrom,
    MountSources,
    RunMount,
    SecretMount,
    SshMount,
    TmpfsMount,
)
from lamina.build.ops import RunStep
from lamina.build.secrets import BuildSecrets, SecretError, SshAgents, private_dir
from lamina.build.worker.runmounts import PreparedMount

__all__ = ["MountError", "RunMounts", "mount_label"]

View = Callable[[list[Path]], contextlib.AbstractContextManager[Path]]


class MountError(Exception):
    """A RUN mount could not be prepared; the message names the mount as written."""


def mount_label(mount: RunMount) -> str:
    """The mount as a short ``type=...,target=...`` phrase for error lines (never a secret's value)."""
    if isinstance(mount, (SecretMount, SshMount)):
        where = f",target={mount.target}" if mount.target else f",env={getattr(mount, 'env', '')}"
        return f"--mount=type={'secret' if isinstance(mount, SecretMount) else 'ssh'},id={mount.id}{where}"
    kind = {CacheMount: "cache", BindMount: "bind", TmpfsMount: "tmpfs"}[type(mount)]
    return f"--mount=type={kind},target={mount.target}"


class RunMounts:
    """The mounts of one RUN, prepared on entry and released on exit (see the module docstring)."""

    def __init__(
        self,
        step: RunStep,
        sources: MountSources | None,
        *,
        view: View,
        store: Callable[[], CacheMountStore],
        context: BuildContext,
        named_contexts: Mapping[str, BuildContext],
        secrets: BuildSecrets,
        ssh: SshAgents,
        scratch: Path,
    ) -> None:
        self.step = step
        self.sources = sources or MountSources()
        self._view = view
        self._store = store
        self._context = context
        self._named = named_contexts
        self._secrets = secrets
        self._ssh = ssh
        self._scratch = scratch
        self._stack = contextlib.ExitStack()
        self._cancelled = threading.Event()  # set when the build stops while a locked cache is awaited
        self._servers: list[asyncio.AbstractServer] = []
        self._private: Path | None = None
        self.prepared: list[PreparedMount] = []
        self.env: dict[str, str] = {}

    async def __aenter__(self) -> RunMounts:
        try:
            for index, mount in enumerate(self.step.mounts):
                try:
                    prepared = await self._prepare(index, mount)
                except (OSError, ContextError, CacheMountError, SecretError) as exc:
                    raise MountError(f"{mount_label(mount)}: {exc}") from None
                if prepared is not None:
                    self.prepared.append(prepared)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        await asyncio.to_thread(self._stack.close)  # cache locks, overlay views (umount blocks)
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    def _private_dir(self) -> Path:
        if self._private is None:
            self._private = private_dir("lamina-run-")
        return self._private

    async def _prepare(self, index: int, mount: RunMount) -> PreparedMount | None:
        if isinstance(mount, TmpfsMount):
            return PreparedMount(mount.target, "tmpfs", kind="tmpfs", readonly=mount.readonly, size=mount.size)
        if isinstance(mount, SecretMount):
            return self._secret(mount)
        if isinstance(mount, SshMount):
            return await self._ssh_socket(index, mount)
        try:
            return await asyncio.to_thread(self._from_tree, index, mount)
        except asyncio.CancelledError:
            self._cancelled.set()
            raise

    # -- cache and bind ----------------------------------------------------------------------------

    def _tree(self, origin: MountFrom) -> SourceTree:
        """The root a bind or cache seed reads from, as a tree that resolves paths inside it."""
        if origin.context is not None:
            tree = self._named.get(origin.context)
            if tree is None:
                raise MountError(f"from={origin.context}: no build context of that name (--build-context)")
            return tree
        if origin.is_default:
            return self._context
        lowers = self.sources.lowers.get(origin)
        if lowers is None:
            raise MountError(f"from={origin.stage if origin.image is None else origin.image}: its root filesystem "
                             "was not prepared")
        root = self._stack.enter_context(self._view(lowers[::-1]))
        label = f"stage {origin.stage}" if origin.stage is not None else f"image {origin.image}"
        return SourceTree(root, label=label)

    def _resolve(self, tree: SourceTree, source: str, mount: RunMount) -> Entry:
        entry = tree.resolve(source.lstrip("/"))
        if entry is None:
            where = tree.label + (" (or excluded by .dockerignore)" if tree.matcher else "")
            raise MountError(f"{mount_label(mount)}: source {source} not found in {where}")
        return entry

    def _from_tree(self, index: int, mount: CacheMount | BindMount) -> PreparedMount:
        if isinstance(mount, CacheMount):
            return self._cache(index, mount)
        tree = self._tree(mount.origin)
        entry = self._resolve(tree, mount.source, mount)
        host = tree.root / entry.path
        filtered = bool(tree.matcher) and entry.is_dir  # the build context's or a named context's .dockerignore
        if mount.readonly and not filtered:
            return PreparedMount(mount.target, str(host), readonly=True, is_dir=entry.is_dir)
        copy = self._scratch / f"bind-{index}"
        if entry.is_dir:
            copy.mkdir(mode=0o700)
            _same_meta(host, copy)
            if filtered:
                _filtered_tree(tree, entry, copy, link=mount.readonly)
            else:
                copy_tree(host, copy)
        else:
            shutil.copy2(host, copy, follow_symlinks=False)
            os.chown(copy, entry.st.st_uid, entry.st.st_gid, follow_symlinks=False)
        return PreparedMount(mount.target, str(copy), readonly=mount.readonly, is_dir=entry.is_dir)

    def _cache(self, index: int, mount: CacheMount) -> PreparedMount:
        read = self.sources.inputs[index] if index < len(self.sources.inputs) else None
        perms = (mount.mode, mount.uid, mount.gid) != (None, None, None)
        if mount.source == "/" and perms:  # BuildKit's "settings cache mount permissions" mkdir
            identity: Any = {"mkdir": [mount.mode, mount.uid, mount.gid], "from": read}
            seed = Seed(identity, mode=0o755 if mount.mode is None else mount.mode, uid=mount.uid or 0,
                        gid=mount.gid or 0)
        elif mount.origin.is_default and mount.source == "/":
            seed = Seed()
        else:
            tree = self._tree(mount.origin) if not mount.origin.is_default else self._context
            entry = self._resolve(tree, mount.source, mount)
            if not entry.is_dir:
                raise MountError(f"{mount_label(mount)}: source {mount.source} is not a directory")
            seed = Seed({"from": read, "source": mount.source}, source=tree.root / entry.path)
        lease = self._store().acquire(mount.id, mount.sharing, seed, cancelled=self._cancelled.is_set)
        self._stack.callback(lease.release)
        return PreparedMount(mount.target, str(lease.path), readonly=mount.readonly, is_dir=True)

    # -- secrets and ssh ---------------------------------------------------------------------------

    def _secret(self, mount: SecretMount) -> PreparedMount | None:
        value = self._secrets.read(mount.id)
        if value is None:
            if mount.required:
                raise MountError(f"{mount_label(mount)}: secret {mount.id!r} is required but the build has no such "
                                 f"secret: pass --secret id={mount.id},src=FILE (or env=VAR)")
            return None  # BuildKit leaves an optional secret that is not there out of the RUN
        if mount.env is not None:
            self.env[mount.env] = value.decode("utf-8", "surrogateescape")
        if mount.target is None:
            return None
        path = self._private_dir() / f"secret-{len(os.listdir(self._private_dir()))}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, value)
            os.fchown(fd, mount.uid, mount.gid)
            os.fchmod(fd, mount.mode)
        finally:
            os.close(fd)
        return PreparedMount(mount.target, str(path), readonly=True, is_dir=False)

    async def _ssh_socket(self, index: int, mount: SshMount) -> PreparedMount | None:
        agent = await self._ssh.socket(mount.id)
        if agent is None:
            if mount.required:
                raise MountError(f"{mount_label(mount)}: ssh agent {mount.id!r} is required but the build has none: "
                                 f"pass --ssh {mount.id} (or --ssh {mount.id}=SOCKET|KEYFILE)")
            return None
        path = self._private_dir() / f"ssh-{index}.sock"
        server = await asyncio.start_unix_server(lambda r, w: _forward(agent, r, w), path=str(path))
        self._servers.append(server)
        os.chown(path, mount.uid, mount.gid)
        os.chmod(path, mount.mode)
        return PreparedMount(mount.target, str(path), readonly=True, is_dir=False)


async def _forward(agent: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One connection from the container, piped both ways to the agent socket."""
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(agent)
    except OSError:
        writer.close()
        return

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _same_meta(source: Path, dest: Path) -> None:
    st = os.lstat(source)
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, stat.S_IMODE(st.st_mode))


def _filtered_tree(tree: SourceTree, top: Entry, dest: Path, *, link: bool) -> None:
    """The directory ``top`` of the context as BuildKit receives it (no ``.dockerignore``d entries): hard
    links to the kept files when ``link`` (a read-only bind), copies otherwise (a throwaway ``rw`` bind)."""
    for rel, entry in tree.walk(top):
        source, target = tree.root / entry.path, dest / rel
        if entry.is_dir:
            target.mkdir()
            _same_meta(source, target)
        elif entry.is_symlink:
            os.symlink(entry.link or "", target)
            os.lchown(target, entry.st.st_uid, entry.st.st_gid)
        elif entry.is_file:
            if link:
                try:
                    os.link(source, target, follow_symlinks=False)
                    continue
                except OSError:
                    pass
            shutil.copy2(source, target, follow_symlinks=False)
            os.chown(target, entry.st.st_uid, entry.st.st_gid)

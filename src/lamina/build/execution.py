"""Executing a step that missed the cache: materialise its parent, mount, run/copy/mkdir, write the layer.

The solver's only door to the worker and the context code. Materialising a lazy chain means: each
layer's blob is made local (fetched from its ``source`` registry if needed) and unpacked once into the
LayerStore by diffID; the unpacked dirs are the overlay lowers. A step runs on a fresh snapshot; after
unmount its upper dir is written as a layer blob (deterministic, clamped to SOURCE_DATE_EPOCH), the
blob is ingested into the content store, and a :class:`LayerRef` comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lamina.build.cache.base import LayerRef, utc_now
from lamina.build.context import BuildContext, ContextError
from lamina.build.filecopy import CopyError, Downloads, apply_copy, copy_checksum
from lamina.build.imageconfig import epoch_time
from lamina.build.images import ImageSource
from lamina.build.ops import CopyStep, RunStep, WorkdirStep
from lamina.build.secrets import BuildSecrets, SshAgents
from lamina.build.state import BuildState
from lamina.oci import Descriptor, Platform, host_platform

if TYPE_CHECKING:  # the worker (runc, overlay, tar, zstd) is imported on first use: a cached build never needs it
    from lamina.build.cachemounts import CacheMountSource, CacheMountStore
    from lamina.build.mounts import MountFrom, MountSources
    from lamina.build.worker.executor import RuncExecutor
    from lamina.build.worker.layerstore import LayerStore
    from lamina.build.worker.runtime_spec import Mount
    from lamina.build.worker.snapshot import Snapshotter
    from lamina.build.worker.usernet import NetworkPool
    from lamina.build.worker.users import ResolvedUser

__all__ = ["ExecutionError", "StepExecutor"]

Output = Callable[[bytes], None]
# RunStep.network (the effective mode, see lamina.build.entitlements) -> RunSpec.network
_NETWORK_MODES: dict[str, Literal["sandbox", "none", "host"]] = {"default": "sandbox", "none": "none", "host": "host"}


def _user_of(rootfs: Path, spec: str) -> ResolvedUser:
    """USER ``spec`` as ``rootfs``'s passwd/group resolve it; an unknown one is an ExecutionError naming it."""
    from lamina.build.worker.users import UnknownUser, resolve_user

    try:
        return resolve_user(rootfs, spec)
    except UnknownUser as exc:
        raise ExecutionError(f"USER {spec!r}: {exc}") from None


class ExecutionError(Exception):
    """A step could not be executed; the message says why (the solver adds the Dockerfile line)."""


class StepExecutor:
    """Executes the solver's steps (RUN, COPY/ADD, WORKDIR) on snapshots; RUN processes go to the worker's
    process runner (:class:`lamina.build.worker.executor.RuncExecutor`, the worker's ``Executor`` role)."""

    def __init__(
        self,
        state: BuildState,
        images: ImageSource,
        context: BuildContext,
        *,
        compression: str = "gzip",
        source_date_epoch: int | None = None,
        runtime: str = "runc",
        named_contexts: Mapping[str, BuildContext] | None = None,
        secrets: BuildSecrets | None = None,
        ssh: SshAgents | None = None,
        cache_mount_source: CacheMountSource | None = None,
    ) -> None:
        self.cache_mount_source = cache_mount_source  # the remote cache's cache-mount contents (issue 10)
        self.secrets = secrets or BuildSecrets()  # --secret: read only when a RUN that mounts one executes
        self.ssh = ssh or SshAgents()  # --ssh: agents started at the first RUN that mounts one
        self.state = state
        self.images = images
        self.context = context
        self.named_contexts = dict(named_contexts or {})  # --build-context NAME=DIR, for COPY --from=NAME
        self.compression = compression
        self.source_date_epoch = source_date_epoch
        self._runtime_name = runtime
        self._unpacking: dict[str, asyncio.Task[Path]] = {}
        self._networks: NetworkPool | None = None  # the RUN sandbox's networks, made with the runtime
        self.downloads = Downloads()  # ADD <url>: fetched once per build, shared by checksum and copy

    def close(self) -> None:
        self.downloads.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until every RUN sandbox network is torn down (none outlives the build)."""
        self.close()
        await self.ssh.aclose()  # the private ssh agents die with the build
        if self._networks is not None:
            await self._networks.aclose()

    @functools.cached_property
    def snapshotter(self) -> Snapshotter:
        """overlayfs, or copying where it cannot mount — probed on first use: a fully cached build never is.

        First, once per build, the snapshots (and their overlay mounts) of builds that died are removed.
        """
        from lamina.build.worker.copydiff import detect_snapshotter
        from lamina.build.worker.snapshot import cleanup_stale_snapshots

        cleanup_stale_snapshots(self.state.root)
        return detect_snapshotter(self.state.root)

    @functools.cached_property
    def layer_store(self) -> LayerStore:
        """Unpacked layers in <root>/layers/<diffID hex>, swept of unpacks killed builds left (never used)."""
        from lamina.build.worker.layerstore import LayerStore

        store = LayerStore(self.state.root)
        store.cleanup_partial()
        return store

    @functools.cached_property
    def runtime(self) -> RuncExecutor:
        """The OCI runtime (runc, or crun with ``--runtime crun``), looked up at the first RUN."""
        from lamina.build.worker.executor import RuncExecutor
        from lamina.build.worker.usernet import NetworkPool

        state_dir = self.state.root / "runc"
        try:
            runtime = RuncExecutor(state_dir, runtime=self._runtime_name, networks=NetworkPool(state_dir / "network"))
        except FileNotFoundError as exc:
            raise ExecutionError(str(exc)) from None
        self._networks = runtime.networks
        return runtime

    # -- materialising lazy results ------------------------------------------------------------------

    async def materialize(self, layers: Sequence[LayerRef]) -> list[Path]:
        """The unpacked dirs of ``layers`` (bottom first), fetching and unpacking only what is missing."""
        return list(await asyncio.gather(*(self._unpacked(layer) for layer in layers)))

    async def _unpacked(self, layer: LayerRef) -> Path:
        key = layer.diff_id.encoded
        task = self._unpacking.get(key)
        if task is None or _failed(task):  # a failed unpack (bad cached blob) is never reused for a new layer
            task = self._unpacking[key] = asyncio.ensure_future(self._unpack(layer))
        return await task

    async def _unpack(self, layer: LayerRef) -> Path:
        if self.layer_store.has(layer.diff_id):
            return self.layer_store.path(layer.diff_id)
        media_type = layer.descriptor.media_type
        if layer.source is not None and not self.state.content.has(layer.descriptor.digest):
            with contextlib.suppress(Exception):  # a broken stream falls back to download-then-unpack
                return await self.layer_store.unpack_async(self.images.stream(layer), media_type, layer.diff_id)
        blob = await self.images.fetch(layer)
        return await asyncio.to_thread(self.layer_store.unpack, blob, layer.descriptor.media_type, layer.diff_id)

    # -- steps ---------------------------------------------------------------------------------------

    async def run(
        self,
        step: RunStep,
        lowers: list[Path],
        *,
        output: Output,
        platform: Platform | None = None,
        mounts: MountSources | None = None,
    ) -> LayerRef:
        """Run ``step`` on ``lowers``; a ``platform`` the host does not run natively goes through QEMU
        user emulation (binfmt_misc), checked before anything is mounted. ``mounts``: what the step's
        ``RUN --mount`` s read (the solver's :class:`~lamina.build.mountprep.MountSources`)."""
        from lamina.build.mountprep import MountError, RunMounts
        from lamina.build.worker.executor import RunFailed
        from lamina.build.worker.runmounts import mount_stubs, runc_mounts
        from lamina.build.worker.runtime_spec import RunSpec
        from lamina.build.worker.users import resolve_in_root

        if platform is not None:
            from lamina.build.worker.emulation import EmulationUnavailable, check_emulation

            try:
                check_emulation(platform, host_platform())
            except EmulationUnavailable as exc:
                raise ExecutionError(str(exc)) from None
        runtime = self.runtime  # a missing runtime binary fails here, before anything is mounted

        def on_output(_stream: str, line: str) -> None:
            output(line.encode() + b"\n")

        async def execute(rootfs: Path) -> None:
            user = _user_of(rootfs, step.user)
            env = (*step.env, *step.proxy_env, *(f"{k}={v}" for k, v in prepared.env.items()))
            if not any(item.startswith("HOME=") for item in env):  # as Docker: the user's passwd home
                env = (*env, f"HOME={user.home}")
            spec = RunSpec(
                argv=step.argv,
                env=env,
                mounts=(*self._inline_mounts(step, scratch), *runc_mounts(prepared.prepared)),
                cwd=step.workdir or "/",
                uid=user.uid,
                gid=user.gid,
                additional_gids=user.additional_gids,
                network=_NETWORK_MODES[step.network],
                security="insecure" if step.security == "insecure" else "sandbox",
                ulimits=step.extras.ulimits,
                extra_hosts=step.extras.hosts,
                shm_size=step.extras.shm_size,
                hostname=step.extras.hostname or "buildkitsandbox",
            )
            cwd = resolve_in_root(rootfs, step.workdir or "/")
            if not cwd.exists():
                cwd.mkdir(parents=True, exist_ok=True)
            try:
                await runtime.run(spec, rootfs, on_output, private=bool(prepared.env))
            except RunFailed as exc:
                tail = "\n".join(f"  {line}" for line in exc.last_lines[-8:])
                detail = f"; last output:\n{tail}" if tail else ""
                raise ExecutionError(f"exit code {exc.exit_code}{detail}") from None

        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.state.tmp_dir))
        try:
            prepared = RunMounts(step, mounts, view=self.snapshotter.view, store=lambda: self.cache_mounts,
                                 context=self.context, named_contexts=self.named_contexts, secrets=self.secrets,
                                 ssh=self.ssh, scratch=scratch)
            try:
                async with prepared:
                    stubs = mount_stubs(prepared.prepared, [path for path, _ in step.inline_files])
                    return await self._in_snapshot(lowers, execute, mountpoints=stubs)
            except MountError as exc:
                raise ExecutionError(str(exc)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @functools.cached_property
    def cache_mounts(self) -> CacheMountStore:
        """RUN --mount=type=cache directories, kept in <root>/cachemounts between builds."""
        from lamina.build.cachemounts import CacheMountStore

        return CacheMountStore(self.state.root / "cachemounts", source=self.cache_mount_source)

    def mount_checksum(self, origin: MountFrom, source: str) -> str:
        """The content checksum of what a RUN --mount bind reads from the build context or a named context
        (names, modes, bytes of the selected files after .dockerignore), for the RUN's cache key."""
        tree = self.named_contexts.get(origin.context) if origin.context is not None else self.context
        if tree is None:
            raise ExecutionError(f"RUN --mount from={origin.context}: no build context of that name")
        try:
            return tree.checksum([source.lstrip("/") or "."])
        except (OSError, ContextError) as exc:
            raise ExecutionError(f"RUN --mount source {source}: {exc}") from None

    @staticmethod
    def _inline_mounts(step: RunStep, scratch: Path) -> tuple[Mount, ...]:
        """``RUN <<EOF`` scripts: files bound read-only (mode 0755) into this RUN only, never into the layer."""
        from lamina.build.worker.runtime_spec import Mount

        mounts = []
        for i, (path, content) in enumerate(step.inline_files):
            source = scratch / f"inline-{i}"
            source.write_text(content)
            source.chmod(0o755)
            mounts.append(Mount(destination=path, source=str(source)))
        return tuple(mounts)

    async def copy(
        self,
        step: CopyStep,
        lowers: list[Path],
        *,
        context_dir: Path,
        source_lowers: list[Path] | None,
    ) -> LayerRef:
        from lamina.build.worker.users import resolve_chown

        def copy_into(rootfs: Path) -> None:
            def owner(spec: str) -> tuple[int, int]:
                return resolve_chown(rootfs, spec)  # --chown=1234 is 1234:1234, as BuildKit's file op

            if source_lowers is None:
                self._apply_copy(step, self.source_tree(step).root, rootfs, owner, from_context=True)
                return
            with self.snapshotter.view(source_lowers[::-1]) as source_root:
                self._apply_copy(step, Path(source_root), rootfs, owner, from_context=False)

        async def execute(rootfs: Path) -> None:
            await asyncio.to_thread(copy_into, rootfs)

        return await self._in_snapshot(lowers, execute, run=False)

    def _apply_copy(self, step: CopyStep, source_root: Path, rootfs: Path, owner: Any, *, from_context: bool) -> None:
        try:
            apply_copy(
                step,
                source_root=source_root,
                rootfs=rootfs,
                context_ignore=self.source_tree(step).matcher if from_context else None,
                resolve_owner=owner,
                downloads=self.downloads,
                source=self.source_tree(step) if from_context else None,
            )
        except (OSError, ValueError, LookupError, ContextError, CopyError) as exc:
            raise ExecutionError(str(exc)) from None

    async def workdir(self, step: WorkdirStep, lowers: list[Path]) -> LayerRef:
        from lamina.build.worker.users import resolve_chown, resolve_in_root

        def make(rootfs: Path) -> None:
            target = resolve_in_root(rootfs, step.path)
            if target.is_dir():
                return
            missing = [target]
            while not missing[-1].parent.exists():
                missing.append(missing[-1].parent)
            target.mkdir(parents=True, mode=0o755)
            if step.user:
                uid, gid = resolve_chown(rootfs, step.user)  # BuildKit's Mkdir WithUser: USER 1234 -> 1234:1234
                for path in missing:
                    os.chown(path, uid, gid)

        async def execute(rootfs: Path) -> None:
            await asyncio.to_thread(make, rootfs)

        return await self._in_snapshot(lowers, execute, run=False)

    def source_tree(self, step: CopyStep) -> BuildContext:
        """The files a context COPY reads: the build context, or the named directory context of ``--from``."""
        if step.from_context is None:
            return self.context
        try:
            return self.named_contexts[step.from_context]
        except KeyError:
            raise ExecutionError(f"no directory build context named {step.from_context!r}") from None

    def context_checksum(self, context_dir: Path, step: CopyStep) -> str:
        try:
            return copy_checksum(step, self.source_tree(step), downloads=self.downloads)
        except (OSError, ValueError, LookupError, ContextError, CopyError) as exc:
            raise ExecutionError(str(exc)) from None

    async def stage_checksum(self, step: CopyStep, layers: Sequence[LayerRef]) -> str:
        """The checksum of what ``COPY --from=<stage>`` selects in that stage's result (owners included):
        BuildKit's content-based cache key of the copy (see :mod:`lamina.build.copykeys`)."""
        from lamina.build.context import SourceTree

        lowers = await self.materialize(layers)

        def compute() -> str:
            with self.snapshotter.view(lowers[::-1]) as root:
                return copy_checksum(step, SourceTree(Path(root), label="source stage"), owners=True)

        try:
            return await asyncio.to_thread(compute)
        except (ValueError, LookupError, ContextError, CopyError) as exc:
            raise ExecutionError(str(exc)) from None

    # -- snapshot + layer ----------------------------------------------------------------------------

    async def _in_snapshot(
        self,
        lowers: list[Path],
        execute: Callable[[Path], Awaitable[None]],
        *,
        run: bool = True,
        mountpoints: Sequence[tuple[str, bool]] | None = None,
    ) -> LayerRef:
        """Mount ``lowers`` (bottom first) with a fresh upper, execute, write the upper as a layer.

        The upper dir is then adopted into the LayerStore under the new diffID, so the next step stacks
        it as a lower without unpacking the blob again. RUN needs the stubs of its mountpoints kept out of
        the layer (``mountpoints``, default the runtime's own; see worker.runmounts); COPY and WORKDIR none.
        """
        from lamina.build.worker.tarwrite import write_layer

        top_first = lowers[::-1]
        stubs = {} if run and mountpoints is None else {"mountpoints": mountpoints if run else ()}
        snapshot = self.snapshotter.prepare(top_first, **stubs)
        out_dir = self.state.content.ingest_path()  # private to this step: concurrent builds never collide
        try:
            async with _mounted(snapshot) as rootfs:
                await execute(rootfs)
            blob = await asyncio.to_thread(
                write_layer,
                snapshot.upper,
                out_dir,
                compression=self.compression,  # type: ignore[arg-type]
                source_date_epoch=self.source_date_epoch,
                lowers=top_first,  # what the stack already holds stays out of the layer, as BuildKit's differ
            )
            try:
                self.state.content.adopt(blob.path, blob.digest)  # write_layer hashed every byte it wrote
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
            await asyncio.to_thread(self.layer_store.adopt, snapshot.upper, blob.diff_id)
        finally:
            await asyncio.to_thread(snapshot.discard)
        digest = blob.digest
        created = epoch_time(self.source_date_epoch) if self.source_date_epoch is not None else utc_now()
        return LayerRef(Descriptor(blob.media_type, digest, blob.size), blob.diff_id, created, None)


def _failed(task: asyncio.Future[Any]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


@contextlib.asynccontextmanager
async def _mounted(snapshot: Any) -> AsyncIterator[Path]:
    """Enter the snapshot's mount in a thread (mount/umount block), yield the merged rootfs."""
    await asyncio.to_thread(snapshot.__enter__)
    try:
        yield Path(snapshot.rootfs)
    except BaseException as exc:
        await asyncio.to_thread(snapshot.__exit__, type(exc), exc, None)
        raise
    await asyncio.to_thread(snapshot.__exit__, None, None, None)

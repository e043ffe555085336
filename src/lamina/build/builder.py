"""One build, end to end: Dockerfile -> graph -> solve -> image -> outputs. The library behind the CLI.

:func:`build` wires the pieces: the frontend (``lamina.build.dockerfile.convert``, whose base-image
callback we answer through the registry client), the solver with the local cache (and, next, remote
cache importers/exporters), the executor over the worker, and the exporters. ``bench/`` and the
integration tests call it directly; ``lamina build`` only parses flags into a :class:`BuildRequest`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.build.access import declare_access
from lamina.build.annotations import Annotations
from lamina.build.buildmeta import image_names
from lamina.build.cache.base import CachedResult, CacheExporter, CacheImporter
from lamina.build.cache.importer import ImportedCache
from lamina.build.cache.inline import InlineCacheExporter
from lamina.build.cache.registry import ExportSummary
from lamina.build.cache.setup import make_cache_exporters, resolve_cache_from
from lamina.build.cacheopts import CacheFrom, CacheTo
from lamina.build.context import BuildContext
from lamina.build.dockerarchive import export_docker
from lamina.build.dockerfile import convert
from lamina.build.entitlements import apply_sandbox, check_build_network
from lamina.build.execution import StepExecutor
from lamina.build.exporter import ExportImage, insecure_output_registries, push_image, write_local, write_oci_tar
from lamina.build.images import RegistryImages
from lamina.build.localimages import BaseRecords
from lamina.build.multiplatform import ExportIndex, PlatformImage, base_platform_warning, check_outputs, export_index
from lamina.build.namedcontexts import NamedContext, check_stage_filter, load_dir_contexts
from lamina.build.ocidir import check_oci_dir_outputs, is_oci_dir, write_oci_dir
from lamina.build.ops import BuildGraph, RunExtras, RunStep
from lamina.build.progress import Progress
from lamina.build.rootfstar import STDOUT, check_stream_outputs, copy_to_stdout, write_rootfs_tar
from lamina.build.runextras import apply_run_extras
from lamina.build.secrets import BuildSecrets, SecretSpec, SshAgents, SshSpec
from lamina.build.solver import SolveOptions, Solver, StageResult, StepReport
from lamina.build.state import BuildState
from lamina.client import ClientPool, TransferStats, insecure_registries_from_env
from lamina.oci import Digest, ImageConfig, Platform, format_platform, host_platform, parse_reference

if TYPE_CHECKING:
    from lamina.build.cache.mountsync import CacheMountSync

__all__ = ["BuildRequest", "BuildResult", "build"]


@dataclass(frozen=True)
class BuildRequest:
    """Everything ``lamina build`` was asked (the Dockerfile text and the buildx flags), parsed and checked."""

    context_dir: Path
    dockerfile: str  # the Dockerfile text
    dockerfile_name: str = "Dockerfile"  # for messages ("Dockerfile:12: ...") and Dockerfile.dockerignore
    dockerfile_dir: Path | None = None  # where <name>.dockerignore may sit
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    # --platform: one image per target platform (several: one OCI index), normalised; default the host's
    platforms: tuple[Platform, ...] = field(default_factory=lambda: (host_platform(),))
    push: bool = False
    outputs: tuple[dict[str, str], ...] = ()
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    root: Path | None = None
    network: str = "default"  # RUN's network unless RUN --network says otherwise: default (sandbox) | none | host
    allow: frozenset[str] = frozenset()  # entitlements granted (--allow): network.host, security.insecure
    runtime: str = "runc"  # the OCI runtime binary for RUN steps (runc or crun), looked up at the first RUN
    source_date_epoch: int | None = None
    compression: str = "gzip"
    cache_from: tuple[CacheFrom, ...] = ()  # resolved up front, asked in this order (first hit wins)
    cache_to: tuple[CacheTo, ...] = ()
    annotations: Annotations = field(default_factory=Annotations)  # --annotation
    pull: bool = False  # --pull: base images always from their registry, never the local record of them
    no_cache_filter: frozenset[str] = frozenset()  # --no-cache-filter: stage names built without the cache
    named_contexts: Mapping[str, NamedContext] = field(default_factory=dict)  # --build-context NAME=...
    run_extras: RunExtras = field(default_factory=RunExtras)  # --add-host, --ulimit, --shm-size for every RUN
    secrets: tuple[SecretSpec, ...] = ()  # --secret: where each secret is (read only by a RUN that mounts it)
    ssh: tuple[SshSpec, ...] = ()  # --ssh: agent sockets or key files for RUN --mount=type=ssh

    @property
    def platform(self) -> Platform:
        """The first target platform (the only one of a single-platform build)."""
        return self.platforms[0]


@dataclass(frozen=True)
class BuildResult:
    """What a build made: the image (or index) digest and bytes, each step's report, pushes and transfers."""

    digest: Digest  # the image manifest digest
    config: ImageConfig
    manifest: bytes
    steps: tuple[StepReport, ...]
    pushed: tuple[str, ...]
    transfer: TransferStats  # bytes up/down by kind (manifest, config, layer) over every registry
    cache_exports: tuple[ExportSummary, ...] = ()  # one per --cache-to
    images: tuple[PlatformImage, ...] = ()  # one per platform; ``digest`` is the index's when there are several

    @property
    def cached_steps(self) -> int:
        return sum(1 for s in self.steps if s.cached)


async def build(
    request: BuildRequest,
    progress: Progress,
    *,
    importers: Sequence[CacheImporter] = (),
    exporters: Sequence[CacheExporter] = (),
) -> BuildResult:
    check_build_network(request.network, request.allow)  # before any work: a refused flag costs nothing
    if len(request.platforms) == 1:
        request.annotations.check_single_platform()
    check_outputs(request.outputs, request.platforms)
    check_stream_outputs(request.outputs, len(request.platforms))
    check_oci_dir_outputs(request.outputs, len(request.platforms))
    state = BuildState.open(request.root)
    insecure = insecure_registries_from_env() | insecure_output_registries(request.outputs, request.tags)
    pool = ClientPool(insecure=insecure)
    declare_access(pool, _push_refs(request), request.cache_to, request.cache_from)
    imports = asyncio.ensure_future(resolve_cache_from(request.cache_from, pool, progress))  # while parsing
    try:
        images = RegistryImages(
            pool, state.content, records=None if request.pull else BaseRecords(state.root, progress.message)
        )
        cache_exporters = make_cache_exporters(request.cache_to, pool, images, state.cache, progress)
        loop = asyncio.get_running_loop()

        base_warnings: list[str] = []

        def resolve_base(ref: str, platform: Platform) -> ImageConfig:
            future = asyncio.run_coroutine_threadsafe(images.resolve(ref, platform), loop)
            config = future.result().config
            warning = base_platform_warning(ref, config, platform)
            if warning:
                base_warnings.append(warning)
            return config

        graphs = []
        for platform in request.platforms:  # one graph per target platform; BUILDPLATFORM is the host's
            graph = await asyncio.to_thread(
                convert,
                request.dockerfile,
                build_args=request.build_args,
                target=request.target,
                platform=platform,
                build_platform=host_platform(),
                resolve_base=resolve_base,
                named_contexts=request.named_contexts,
            )
            graph = apply_sandbox(graph, request.network, request.allow, request.dockerfile_name)
            graphs.append(apply_run_extras(graph, request.run_extras))
        graph = graphs[0]
        for warning in dict.fromkeys([*base_warnings, *(warning for graph in graphs for warning in graph.warnings)]):
            progress.message(f"WARNING: {warning}")
        dockerfile_path = request.dockerfile_dir / request.dockerfile_name if request.dockerfile_dir else None
        context = BuildContext.load(request.context_dir, dockerfile_path)
        no_cache_stages = check_stage_filter(request.no_cache_filter, request.dockerfile, graph)
        mount_sync = _mount_sync(graphs, bool(cache_exporters), images, state, progress, loop)
        executor = StepExecutor(
            state,
            images,
            context,
            compression=request.compression,
            source_date_epoch=request.source_date_epoch,
            runtime=request.runtime,
            named_contexts=load_dir_contexts(request.named_contexts),
            secrets=BuildSecrets(request.secrets),
            ssh=SshAgents(request.ssh),
            cache_mount_source=mount_sync,
        )
        cache_importers = [*importers, *await imports]
        if mount_sync is not None:
            mount_sync.caches = [c for c in cache_importers if isinstance(c, ImportedCache)]
            mount_sync.store_of = lambda: executor.cache_mounts
            for cache_exporter in cache_exporters:
                cache_exporter.cache_mounts = mount_sync
        vertices, memo = itertools.count(1), {}  # shared: one numbering, and a step two platforms share runs once
        solvers = [
            Solver(
                graph,
                state=state,
                images=images,
                executor=executor,
                progress=progress,
                context_dir=request.context_dir,
                options=SolveOptions(
                    no_cache=request.no_cache,
                    source_date_epoch=request.source_date_epoch,
                    compression=request.compression,
                    dockerfile_name=request.dockerfile_name,
                    no_cache_stages=no_cache_stages,
                    platform_label=format_platform(platform) if len(graphs) > 1 else None,
                ),
                importers=cache_importers,
                exporters=[*exporters, *cache_exporters],
                vertices=vertices,
                memo=memo,
            )
            for graph, platform in zip(graphs, request.platforms, strict=True)
        ]
        try:
            results = [await solver.solve() for solver in solvers]  # in order: a shared stage's 2nd solve hits
        finally:
            await executor.aclose()  # also waits for the RUN sandbox's networks to be torn down
        targets = [CachedResult(r.key, r.layers, r.config.created or "", "local") for r in results]
        for exporter in exporters:
            await exporter.finalize(*targets)
        built: list[PlatformImage] = []
        for platform, result, target in zip(request.platforms, results, targets, strict=True):
            config = _with_labels(result.config, request.labels)
            for inline in cache_exporters:
                if isinstance(inline, InlineCacheExporter):
                    await inline.finalize(target)  # each platform's image embeds its own chain's records
                    config = inline.embed(config)
            image = ExportImage.create(config, result.layers, request.annotations.manifest(platform))
            built.append(PlatformImage(platform, image, request.annotations.manifest_descriptor(platform)))
        if len(built) == 1:
            image = built[0].image
            pushed = await _export(request, image, results[0], pool, images, executor, progress, state)
            digest, manifest = image.digest, image.manifest_bytes
        else:
            index = ExportIndex.create(built, request.annotations.index())
            pushed = await export_index(
                index, _push_refs(request), request.outputs, request.tags, pool, images, executor, progress,
                state.cache, descriptor_annotations=request.annotations.index_descriptor(),
            )
            digest, manifest = index.digest, index.index_bytes
        for exporter in cache_exporters:  # after the image: its blobs are then HEAD hits or mounts
            if not isinstance(exporter, InlineCacheExporter):
                await exporter.finalize(*targets)
        return BuildResult(
            digest, built[0].image.config, manifest, tuple(r for s in solvers for r in s.reports), pushed,
            pool.stats(), tuple(exporter.summary for exporter in cache_exporters), tuple(built),
        )
    finally:
        if not imports.done():
            imports.cancel()
            await asyncio.gather(imports, return_exceptions=True)
        await pool.close()
        state.close()


def _mount_sync(
    graphs: Sequence[BuildGraph], exporting: bool, images: RegistryImages, state: BuildState, progress: Progress,
    loop: asyncio.AbstractEventLoop,
) -> CacheMountSync | None:
    """The link between RUN cache mounts and the remote caches (:mod:`lamina.build.cache.mountsync`) for a
    build that may move cache-mount contents: one with a RUN that has mounts (imported on its first run) or a
    ``--cache-to`` (exported, or carried over from the imported caches). None for any other build, which
    then never loads that module."""
    has_mounts = any(isinstance(step, RunStep) and step.mounts
                     for graph in graphs for stage in graph.stages for step in stage.steps)
    if not (has_mounts or exporting):
        return None
    from lamina.build.cache.mountsync import CacheMountSync

    return CacheMountSync(images, state.content, progress, loop)


def _with_labels(config: ImageConfig, labels: dict[str, str]) -> ImageConfig:
    if not labels:
        return config
    merged = dict(config.config.get("Labels") or {})
    merged.update(labels)
    return replace(config, config=config.config.with_(Labels=merged))


def _push_refs(request: BuildRequest) -> list[str]:
    """Every reference the image is pushed to: ``-t`` with ``--push``, and ``--output type=registry`` names."""
    refs = list(request.tags) if request.push else []
    for output in request.outputs:
        if output["type"] in ("registry", "image") and (output.get("push", "true") != "false"):
            names = [n for n in output.get("name", "").split(";") if n] or list(request.tags)
            if not names:
                raise ValueError("--output type=registry needs a name: pass -t REF or name=REF")
            refs.extend(n for n in names if n not in refs)
    return refs


async def _export(
    request: BuildRequest,
    image: ExportImage,
    result: StageResult,
    pool: ClientPool,
    images: RegistryImages,
    executor: StepExecutor,
    progress: Progress,
    state: BuildState,
) -> tuple[str, ...]:
    pushed: list[str] = []
    registry_refs = _push_refs(request)
    progress.message(f"writing image {image.digest}")
    if registry_refs:
        await push_image(pool, registry_refs, image, images, state.cache)
        for ref in registry_refs:
            progress.message(f"pushing {ref} ({image.digest}) done")
            pushed.append(ref)
    descriptor_annotations = request.annotations.manifest_descriptor(request.platform)
    for output in request.outputs:
        if is_oci_dir(output):
            ref_name = output.get("name") or (parse_reference(request.tags[0]).tag if request.tags else None)
            await write_oci_dir(Path(output["dest"]), image, images, ref_name=ref_name,
                                descriptor_annotations=descriptor_annotations)
            progress.message(f"exporting to oci image layout {output['dest']} done")
        elif output["type"] == "oci":
            ref_name = output.get("name") or (parse_reference(request.tags[0]).tag if request.tags else None)
            streamed = output["dest"] == STDOUT
            dest = state.tmp_dir / f"oci-{image.digest.encoded}.tar" if streamed else Path(output["dest"])
            try:
                await write_oci_tar(dest, image, images, ref_name=ref_name,
                                    descriptor_annotations=descriptor_annotations)
                if streamed:
                    await copy_to_stdout(dest)
            finally:
                if streamed:
                    dest.unlink(missing_ok=True)
            progress.message(f"exporting to oci image format {output['dest']} done")
        elif output["type"] == "docker":
            await export_docker(output, image, images, image_names(request.tags, [output]),
                                descriptor_annotations, state.tmp_dir)
            progress.message(f"exporting to docker image format {output.get('dest') or '`docker load`'} done")
        elif output["type"] == "tar":
            lowers = await executor.materialize(result.layers)
            await write_rootfs_tar(output["dest"], lowers[::-1], executor.snapshotter.view)
            progress.message(f"sending tarball {output['dest']} done")
        elif output["type"] == "local":
            lowers = await executor.materialize(result.layers)
            await write_local(Path(output["dest"]), lowers[::-1], executor.snapshotter.view)
            progress.message(f"copying files to {output['dest']} done")
    return tuple(pushed)

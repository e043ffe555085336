"""One build, end to end: Dockerfile -> graph -> solve -> image -> outputs. The library behind the CLI.

:func:`build` wires the pieces: the frontend (``lamina.build.dockerfile.convert``, whose base-image
callback we answer through the registry client), the solver with the local cache (and, next, remote
cache importers/exporters), the executor over the worker, and the exporters. ``bench/`` and the
integration tests call it directly; ``lamina build`` only parses flags into a :class:`BuildRequest`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lamina.build.access import declare_access
from lamina.build.cache.base import CachedResult, CacheExporter, CacheImporter
from lamina.build.cache.inline import InlineCacheExporter
from lamina.build.cache.registry import ExportSummary
from lamina.build.cache.setup import make_cache_exporters, resolve_cache_from
from lamina.build.cacheopts import CacheFrom, CacheTo
from lamina.build.context import BuildContext
from lamina.build.dockerfile import convert
from lamina.build.entitlements import apply_sandbox, check_build_network
from lamina.build.execution import StepExecutor
from lamina.build.exporter import ExportImage, push_image, write_local, write_oci_tar
from lamina.build.images import RegistryImages
from lamina.build.progress import Progress
from lamina.build.solver import SolveOptions, Solver, StageResult, StepReport
from lamina.build.state import BuildState
from lamina.client import ClientPool, TransferStats, insecure_registries_from_env
from lamina.oci import Digest, ImageConfig, Platform, parse_reference

__all__ = ["BuildRequest", "BuildResult", "build"]


@dataclass(frozen=True)
class BuildRequest:
    context_dir: Path
    dockerfile: str  # the Dockerfile text
    dockerfile_name: str = "Dockerfile"  # for messages ("Dockerfile:12: ...") and Dockerfile.dockerignore
    dockerfile_dir: Path | None = None  # where <name>.dockerignore may sit
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: Platform = field(default_factory=lambda: Platform("amd64", "linux"))
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


@dataclass(frozen=True)
class BuildResult:
    digest: Digest  # the image manifest digest
    config: ImageConfig
    manifest: bytes
    steps: tuple[StepReport, ...]
    pushed: tuple[str, ...]
    transfer: TransferStats  # bytes up/down by kind (manifest, config, layer) over every registry
    cache_exports: tuple[ExportSummary, ...] = ()  # one per --cache-to

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
    state = BuildState.open(request.root)
    pool = ClientPool(insecure=insecure_registries_from_env())
    declare_access(pool, _push_refs(request), request.cache_to, request.cache_from)
    imports = asyncio.ensure_future(resolve_cache_from(request.cache_from, pool, progress))  # while parsing
    try:
        images = RegistryImages(pool, state.content)
        cache_exporters = make_cache_exporters(request.cache_to, pool, images, state.cache, progress)
        loop = asyncio.get_running_loop()

        def resolve_base(ref: str, platform: Platform) -> ImageConfig:
            future = asyncio.run_coroutine_threadsafe(images.resolve(ref, platform), loop)
            return future.result().config

        graph = await asyncio.to_thread(
            convert,
            request.dockerfile,
            build_args=request.build_args,
            target=request.target,
            platform=request.platform,
            resolve_base=resolve_base,
        )
        graph = apply_sandbox(graph, request.network, request.allow, request.dockerfile_name)
        for warning in graph.warnings:
            progress.message(f"WARNING: {warning}")
        dockerfile_path = request.dockerfile_dir / request.dockerfile_name if request.dockerfile_dir else None
        context = BuildContext.load(request.context_dir, dockerfile_path)
        executor = StepExecutor(
            state,
            images,
            context,
            compression=request.compression,
            source_date_epoch=request.source_date_epoch,
            runtime=request.runtime,
        )
        solver = Solver(
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
            ),
            importers=[*importers, *await imports],
            exporters=[*exporters, *cache_exporters],
        )
        try:
            result = await solver.solve()
        finally:
            await executor.aclose()  # also waits for the RUN sandbox's networks to be torn down
        target = CachedResult(result.key, result.layers, result.config.created or "", "local")
        for exporter in exporters:
            await exporter.finalize(target)
        config = _with_labels(result.config, request.labels)
        for inline in cache_exporters:
            if isinstance(inline, InlineCacheExporter):
                await inline.finalize(target)
                config = inline.embed(config)
        image = ExportImage.create(config, result.layers)
        pushed = await _export(request, image, result, pool, images, executor, progress, state)
        for exporter in cache_exporters:  # after the image: its blobs are then HEAD hits or mounts
            if not isinstance(exporter, InlineCacheExporter):
                await exporter.finalize(target)
        return BuildResult(
            image.digest, image.config, image.manifest_bytes, tuple(solver.reports), pushed, pool.stats(),
            tuple(exporter.summary for exporter in cache_exporters),
        )
    finally:
        if not imports.done():
            imports.cancel()
            await asyncio.gather(imports, return_exceptions=True)
        await pool.close()
        state.close()


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
    for output in request.outputs:
        if output["type"] == "oci":
            ref_name = output.get("name") or (parse_reference(request.tags[0]).tag if request.tags else None)
            await write_oci_tar(Path(output["dest"]), image, images, ref_name=ref_name)
            progress.message(f"exporting to oci image format {output['dest']} done")
        elif output["type"] == "local":
            lowers = await executor.materialize(result.layers)
            await write_local(Path(output["dest"]), lowers[::-1], executor.snapshotter.view)
            progress.message(f"copying files to {output['dest']} done")
    return tuple(pushed)

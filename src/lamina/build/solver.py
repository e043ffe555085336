"""The solver: walk a BuildGraph, reuse what the caches know, execute only what they do not.

For each stage: the base gives a key (the image's manifest digest + platform, or scratch, or the
earlier stage's final key) and a lazy layer chain; each step's key is computed from its inputs
(:mod:`lamina.build.cachekey`). A hit in any importer (local index first) yields a lazy result — just
descriptors. A miss executes the step on top of its parent, which is only then materialised (blobs
fetched, unpacked by diffID, stacked as overlay lowers); the new layer goes into the content store
and its record into the local cache. Which stages to solve is decided first from the keys alone
(:mod:`lamina.build.demand`): a ``COPY --from`` that hits needs only its source's key. The needed
stages run as concurrent tasks; a stage that needs another's result (``FROM stage``, a ``COPY --from``
that executes) awaits it. Cached layers that turn out unreadable when a step needs their bytes make
the stage solve again without them: a broken remote cache is a slower build, never a failed one.
Every result (executed, hit, or known only by key in a stage not solved) goes to the cache exporters.

Hit order: the local index, then each ``--cache-from`` in flag order; the first that has a usable record
for a key wins (a hit is that record's whole layer chain, whichever cache its parent step hit in). A
``--cache-from`` ref may be rewritten while the build runs: after a round, the lazy layers of its hits
are checked at their caches (:class:`~lamina.build.cache.base.BlobVerifier`); gone ones miss from then
on and the build is solved again (hits are instant, executed steps are local hits now), the last round
with the local index only. The cache exporters (but the local index) get the reports of the round that
stands, so a cache export never names a layer found gone.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build import cachekey, copykeys
from lamina.build.cache.base import (
    BlobVerifier,
    CachedResult,
    CacheExporter,
    CacheImporter,
    CacheLinker,
    LayerRef,
    MissExplainer,
    utc_now,
)
from lamina.build.copyrecords import CopyRecords
from lamina.build.demand import Demand
from lamina.build.execution import StepExecutor
from lamina.build.imageconfig import StepOutcome, build_image_config
from lamina.build.images import ImageSource, SourceImage
from lamina.build.ops import BaseImage, BuildGraph, CopyStep, MetaStep, RunStep, Scratch, Stage, StageBase, Step
from lamina.build.progress import Progress
from lamina.build.state import BuildState
from lamina.oci import Digest, ImageConfig, Platform

if TYPE_CHECKING:
    from lamina.build.mounts import MountFrom, MountSources

__all__ = ["BuildError", "SolveOptions", "Solver", "StageResult"]

_ROUNDS = 3  # solves of the graph at most: hits on layers found gone are dropped between rounds


class BuildError(Exception):
    """A build failed; the message names the Dockerfile line and what went wrong."""


class _Unavailable(Exception):
    """Materialising a lazy chain failed (a cached blob is missing, unreachable or corrupt)."""


class _StaleCache(Exception):
    """Cache hits of this stage named blobs that cannot be read: solve the stage again without them."""

    def __init__(self, blobs: set[Digest], detail: str) -> None:
        super().__init__(detail)
        self.blobs = blobs


@dataclass(frozen=True)
class SolveOptions:
    """Build-wide settings the solver applies to every step (cache use, timestamps, compression, labels)."""

    no_cache: bool = False
    source_date_epoch: int | None = None
    compression: str = "gzip"
    labels: dict[str, str] = field(default_factory=dict)
    dockerfile_name: str = "Dockerfile"
    platform_label: str | None = None  # "linux/arm64": names steps "[linux/arm64 stage 2/3]" (several platforms)
    no_cache_stages: frozenset[int] = frozenset()  # --no-cache-filter: these stages run without the cache


@dataclass(frozen=True)
class StageResult:
    """A solved stage: its final key, its lazy layer chain, its image config, and where its base came from."""

    key: Digest
    layers: tuple[LayerRef, ...]
    config: ImageConfig
    platform: Platform
    base_repository: str | None  # "host/repo" of the FROM image, for cross-repo mounts on push
    changed: str | None = None  # why its final result differs from the cache ("parent step missed"), if it does


@dataclass(frozen=True)
class StepReport:
    """What happened to one step, for --explain-cache and tests."""

    vertex: int
    name: str
    key: Digest
    cached: bool
    origin: str | None
    reason: str | None
    seconds: float


class Solver(CopyRecords):
    def __init__(
        self,
        graph: BuildGraph,
        *,
        state: BuildState,
        images: ImageSource,
        executor: StepExecutor,
        progress: Progress,
        context_dir: Path,
        options: SolveOptions,
        importers: Sequence[CacheImporter] = (),
        exporters: Sequence[CacheExporter] = (),
        vertices: Iterator[int] | None = None,
        memo: dict[Digest, CachedResult] | None = None,
    ) -> None:
        self.graph = graph
        self.state = state
        self.images = images
        self.executor = executor
        self.progress = progress
        self.context_dir = context_dir
        self.options = options
        self.importers: list[CacheImporter] = [state.cache, *importers]
        self.exporters: list[CacheExporter] = [state.cache, *exporters]
        self._tasks: dict[int, asyncio.Task[StageResult]] = {}
        self._vertex = 0
        self._vertices = vertices if vertices is not None else itertools.count(1)  # shared by a build's solvers
        # results executed in this build by key, shared by the solvers of a multi-platform build: a step
        # identical in two platforms' graphs (a FROM --platform=$BUILDPLATFORM stage) executes once, --no-cache too
        self.memo: dict[Digest, CachedResult] = memo if memo is not None else {}
        self.reports: list[StepReport] = []
        self.demand = Demand(
            graph, images, lambda step: executor.context_checksum(context_dir, step),
            lambda key: self._lookup(key) is not None, no_cache=options.no_cache,
            mount_checksum=executor.mount_checksum,
            chain_key=self._chain_key,
        )
        self._bad_blobs: set[Digest] = set()  # cached blobs found unreadable during this build
        # (blob, source) pairs found gone from one cache ref: the same blob from another ref still hits
        self._gone: set[tuple[Digest, str | None]] = set()
        self._base_blobs: set[tuple[Digest, str | None]] = set()  # base image layers: no cache to fall back from
        self._hit_layers: dict[tuple[Digest, str | None], tuple[LayerRef, str]] = {}  # lazy layer -> its hit's origin
        self._held: list[Callable[[], None]] = []  # this round's reports to the cache exporters

    async def solve(self) -> StageResult:
        """Solve the target stage (and, concurrently, every stage it needs), again without the hits whose
        layers turn out gone from their cache (see the module docstring)."""
        for round_ in range(1, _ROUNDS + 1):
            if round_ == _ROUNDS:
                self.importers = [self.state.cache]  # a cache rewritten under us twice: build without it
            result = await self._solve_round()
            gone = await self._gone_layers()
            if not gone:
                for call in self._held:  # the cache exporters see the round that stands, only
                    call()
                return result
            for name, pairs in gone.items():
                self._gone |= pairs
                blobs = {digest for digest, _ in pairs}
                self.progress.message(
                    f"WARNING: cache {name}: layer(s) {', '.join(sorted(b.short for b in blobs))} gone from it "
                    "(the ref was rewritten meanwhile); building the steps that used them"
                )
            self.state.cache.drop_blobs({digest for digest, _ in self._gone} | self._bad_blobs)
        raise AssertionError("unreachable: the last round has no remote cache to lose")

    async def _gone_layers(self) -> dict[str, set[tuple[Digest, str | None]]]:
        """Per cache that lost some: the (blob, source) of this round's lazy hit layers no longer there."""
        lazy = [layer for layer, _ in self._hit_layers.values() if not self._unusable(layer)
                and not self.state.content.has(layer.descriptor.digest)]
        verifiers = [importer for importer in self.importers if isinstance(importer, BlobVerifier)]
        if not lazy or not verifiers:
            return {}
        answers = await asyncio.gather(*(verifier.missing(lazy) for verifier in verifiers))
        gone: dict[str, set[tuple[Digest, str | None]]] = {}
        for verifier, blobs in zip(verifiers, answers, strict=True):
            pairs = {(digest, source) for (digest, source), (_, origin) in self._hit_layers.items()
                     if origin == verifier.name and digest in blobs}
            if pairs:
                gone[verifier.name] = pairs
        return gone

    def _unusable(self, layer: LayerRef) -> bool:
        """A layer found unreadable (any copy), or gone from the cache ref it was to come from."""
        digest = layer.descriptor.digest
        return digest in self._bad_blobs or (digest, layer.source) in self._gone

    def _emit(self, exporter: CacheExporter, call: Callable[[], None]) -> None:
        """The local index records at once (executed steps are its hits in the next round); the other
        exporters get this round's reports only once its hits' layers are known to be there."""
        if exporter is self.state.cache:
            call()
        else:
            self._held.append(call)

    def _note_hit(self, hit: CachedResult) -> None:
        for layer in hit.layers:
            if layer.source is not None:
                self._hit_layers.setdefault((layer.descriptor.digest, layer.source), (layer, hit.origin))

    async def _solve_round(self) -> StageResult:
        self._tasks = {}
        self._hit_layers = {}
        self._held = []
        self.reports = []
        try:
            needed = await self.demand.needed()  # a COPY --from that hits needs only its source's key
        except Exception:
            needed = {stage.index for stage in self.graph.stages}  # solving reports the error with its line
        needed = {*needed, *(s.index for s in self.graph.stages if s.index in self.options.no_cache_stages)}
        for index in sorted(needed):  # a --no-cache-filter stage always runs, as BuildKit's ignore-cache vertices do
            self._task(index)
        try:
            result = await self._task(self.graph.target)
            await self._record_unsolved()
            return result
        finally:
            for task in self._tasks.values():
                if not task.done():
                    task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _record_unsolved(self) -> None:
        """Give the exporters the cached steps of stages that were not solved (a ``COPY --from`` of them
        hit), so a ``mode=max`` re-export keeps their records for the day that COPY misses."""
        if self.options.no_cache:
            return
        for stage in self.graph.stages:
            if stage.index in self._tasks:
                continue
            try:
                parent = await self.demand.base_key(stage.index)
                if isinstance(stage.base, BaseImage):
                    image = await self.images.resolve(stage.base.ref, stage.platform)
                    base_inputs = cachekey.image_inputs(image.manifest_digest, stage.platform)
                    base_slot = f"from:{stage.base.ref} {stage.platform}"
                    for exporter in self.exporters:
                        if isinstance(exporter, CacheLinker):
                            self._emit(exporter, partial(exporter.link, parent, base_inputs, slot=base_slot))
                missed = False
                for step, key in await self.demand.step_keys(stage.index):
                    extra = await self.demand.step_extra(stage.index, step)
                    inputs, link = copykeys.step_inputs(step, parent, stage.platform, **extra)
                    hit = None if missed else self._lookup(key)  # nothing after a miss is a hit
                    missed = hit is None
                    if hit is not None:
                        self._note_hit(hit)
                    if isinstance(step, CopyStep) and cachekey.key_of(inputs) != key:  # COPY --from, content key
                        definition, alias = cachekey.key_of(inputs), copykeys.alias_inputs(inputs, key)
                        for exporter in self.exporters:  # its definition key, an alias, as the solving build wrote
                            if hit is not None and (exporter is not self.state.cache or hit.origin != "local"):
                                self._emit(exporter, partial(exporter.add, definition, alias, hit, slot=str(parent)))
                            elif hit is None and isinstance(exporter, CacheLinker):
                                self._emit(exporter, partial(exporter.link, definition, alias, slot=str(parent)))
                        inputs = self._content_record(step, parent, link)
                    for exporter in self.exporters:
                        if hit is not None and (exporter is not self.state.cache or hit.origin != "local"):
                            self._emit(exporter, partial(exporter.add, key, inputs, hit, slot=str(parent)))
                        elif hit is None and isinstance(exporter, CacheLinker):  # min: the stage stays as links
                            self._emit(exporter, partial(exporter.link, key, inputs, slot=str(parent)))
                    parent = key
            except Exception:  # only the export's completeness is at stake, never the build
                continue

    def _task(self, index: int) -> asyncio.Task[StageResult]:
        task = self._tasks.get(index)
        if task is None:
            task = asyncio.ensure_future(self._solve_stage(self.graph.stage(index)))
            self._tasks[index] = task
        return task

    def _next_vertex(self) -> int:
        self._vertex = next(self._vertices)
        return self._vertex

    def _where(self, line: int) -> str:
        """``Dockerfile:12`` (``Dockerfile:12 [linux/arm64]`` in a multi-platform build): where an error is."""
        where = f"{self.options.dockerfile_name}:{line}" if line else self.options.dockerfile_name
        return f"{where} [{self.options.platform_label}]" if self.options.platform_label else where

    def _label(self, stage: Stage) -> str:
        name = stage.name or f"stage-{stage.index}"
        return f"{self.options.platform_label} {name}" if self.options.platform_label else name

    async def _solve_stage(self, stage: Stage) -> StageResult:
        """Solve a stage; if cached layers it relied on turn out unreadable, solve it again without them
        (a broken cache is a slower build, never a failed one)."""
        for attempt in range(1, 4):
            try:
                return await self._solve_stage_once(stage)
            except _StaleCache as exc:
                self._bad_blobs |= exc.blobs
                self.state.cache.drop_blobs(exc.blobs)
                if attempt == 3:
                    raise BuildError(f"stage {self._label(stage)}: cached layers keep failing: {exc}") from exc
                origins = sorted({origin for (digest, _), (_, origin) in self._hit_layers.items()
                                  if digest in exc.blobs})
                self.progress.message(
                    f"WARNING: cached layer(s) {', '.join(sorted(b.short for b in exc.blobs))}"
                    f"{' from ' + ', '.join(origins) if origins else ''} unusable ({exc}); "
                    f"solving stage {self._label(stage)} again without them"
                )
                for index, task in list(self._tasks.items()):  # a stage whose result names them: solve it again
                    if index != stage.index and task.done() and not task.cancelled() and task.exception() is None \
                            and exc.blobs & {layer.descriptor.digest for layer in task.result().layers}:
                        del self._tasks[index]
        raise AssertionError("unreachable")

    async def _solve_stage_once(self, stage: Stage) -> StageResult:
        total = 1 + sum(1 for s in stage.steps if not isinstance(s, MetaStep))
        label = self._label(stage)
        key, layers, base_config, base_repo, upstream = await self._solve_base(stage, f"[{label} 1/{total}]")
        outcomes: list[StepOutcome] = []
        position = 1
        for step in stage.steps:
            if isinstance(step, MetaStep):
                outcomes.append(StepOutcome(step.created_by, None))
                continue
            position += 1
            name = f"[{label} {position}/{total}] {step.shown or step.created_by}"
            key, layers, missed = await self._solve_step(stage, step, name, key, layers, upstream)
            if missed:
                upstream = "parent step missed"
            outcomes.append(StepOutcome(step.created_by, layers[-1]))
        config = build_image_config(
            base_config,
            stage.platform,
            stage.config,
            outcomes,
            source_date_epoch=self.options.source_date_epoch,
            author=stage.author or (base_config.extra.get("author") if base_config else None),
        )
        return StageResult(key, layers, config, stage.platform, base_repo, upstream)

    async def _solve_base(
        self, stage: Stage, prefix: str
    ) -> tuple[Digest, tuple[LayerRef, ...], ImageConfig | None, str | None, str | None]:
        """The base's key, lazy layers, config, repository, and why it differs from the last build (if known)."""
        base = stage.base
        if isinstance(base, StageBase):
            parent = await self._task(base.stage)
            return parent.key, parent.layers, parent.config, parent.base_repository, parent.changed
        if isinstance(base, Scratch):
            return cachekey.key_of(cachekey.scratch_inputs(stage.platform)), (), None, None, None
        assert isinstance(base, BaseImage)
        vertex = self._next_vertex()
        self.progress.start(vertex, f"{prefix} FROM {base.ref}")
        try:
            image = await self.images.resolve(base.ref, stage.platform)
        except Exception as exc:
            message = f"{self._where(stage.line)}: FROM {base.ref}: {exc}"
            self.progress.error(vertex, message)
            raise BuildError(message) from exc
        self.progress.done(vertex)
        inputs = cachekey.image_inputs(image.manifest_digest, stage.platform)
        key = cachekey.key_of(inputs)
        slot = f"from:{base.ref} {stage.platform}"
        reason = None
        if self.state.cache.lookup(key) is None:
            reason = self.state.cache.explain(slot, inputs)
            self.state.cache.add(key, inputs, CachedResult(key, image.layers, utc_now()), slot=slot)
        self._base_blobs.update((layer.descriptor.digest, layer.source) for layer in image.layers)
        for exporter in self.exporters:
            if isinstance(exporter, CacheLinker):  # the base image: a pure link record, as in BuildKit
                self._emit(exporter, partial(exporter.link, key, inputs, slot=slot))
        return key, image.layers, image.config, image.repository, reason

    async def _source_for_copy(self, stage: Stage, step: CopyStep) -> tuple[dict[str, Any], Any]:
        """The key inputs and the source description of a COPY: context, earlier stage or image."""
        if step.from_stage is not None:  # the key only: the stage's result is awaited if this step executes
            try:
                extra = await self.demand.copy_inputs(stage.index, step)  # by the source's definition key
            except Exception:
                await self._task(step.from_stage)  # the source stage reports its own error, with its line
                raise
            return extra, None
        if step.from_image is not None:
            image = await self.images.resolve(step.from_image, stage.platform)
            return {"source_image": image.manifest_digest}, image
        return {"content": await self.demand.checksum(step)}, None

    async def _solve_step(
        self,
        stage: Stage,
        step: Step,
        name: str,
        parent: Digest,
        layers: tuple[LayerRef, ...],
        upstream: str | None,
    ) -> tuple[Digest, tuple[LayerRef, ...], bool]:
        """Hit or execute one step; ``upstream`` says why the step below it changed (None: it did not)."""
        source: SourceImage | StageResult | None = None
        extra: dict[str, Any] = {}
        vertex = self._next_vertex()
        self.progress.start(vertex, name)
        started = asyncio.get_running_loop().time()
        try:
            if isinstance(step, CopyStep):
                extra, source = await self._source_for_copy(stage, step)
            elif isinstance(step, RunStep) and step.mounts:
                extra = await self.demand.step_extra(stage.index, step)
        except BuildError:
            raise  # the source stage failed and said so
        except Exception as exc:  # a missing source, an unreachable --from image, ...
            raise self._fail(vertex, step, str(exc) or type(exc).__name__) from exc
        inputs, link = copykeys.step_inputs(step, parent, stage.platform, **extra)
        key = cachekey.key_of(inputs)
        slot = str(parent)
        hit = self.memo.get(key) or (None if self._no_cache(stage) else self._lookup(key))
        if hit is not None:
            self._note_hit(hit)
            if hit.key != key:  # COPY --from's definition key, an alias of its content key (lamina.build.copykeys)
                assert isinstance(step, CopyStep)
                self._add_hit(hit.key, self._content_record(step, parent, link), hit, slot)
                inputs = copykeys.alias_inputs(inputs, hit.key)
            self._add_hit(key, inputs, hit, slot)
            self.progress.cached(vertex, hit.origin)
            self._report(vertex, name, key, True, hit.origin, None, started)
            return hit.key, hit.layers, False
        link_hit = None if link is None or self._no_cache(stage) else self._lookup(cachekey.key_of(link))
        if link_hit is not None:  # COPY --link: the layer made on an empty root, merged onto this parent
            assert isinstance(step, CopyStep) and link is not None
            self._note_hit(link_hit)
            merged = self._record_link(step, parent, key, inputs, [link], link_hit, layers)
            self.progress.cached(vertex, link_hit.origin)
            self._report(vertex, name, merged, True, link_hit.origin, None, started)
            return merged, (*layers, link_hit.layers[-1]), False
        content: tuple[Digest, dict[str, Any]] | None = None  # COPY --from=<stage>: keyed by the copied files
        definitions = [(key, inputs)]  # the definition keys recorded as aliases of the content key
        if isinstance(step, CopyStep) and step.from_stage is not None:
            source = await self._task(step.from_stage)  # raises BuildError if that stage failed
            base = parent if link is None else copykeys.scratch_key(stage.platform)  # --link: keyed on scratch
            content = await self._content_key(vertex, step, base, source)
            if source.key != extra["source_stage"]:  # predicted before a content key inside it was known:
                actual = copykeys.step_inputs(step, parent, stage.platform, source_stage=source.key)
                definitions.append((cachekey.key_of(actual[0]), actual[1] or actual[0]))  # a later build's guess
            chit = self.memo.get(content[0]) or (None if self._no_cache(stage) else self._lookup(content[0]))
            if chit is not None and link is not None:  # the link layer, by the files it copies
                self._note_hit(chit)
                links = [link, *(given for _, given in definitions[1:])]
                merged = self._record_link(step, parent, key, inputs, links, chit, layers)
                self.progress.cached(vertex, chit.origin)
                self._report(vertex, name, merged, True, chit.origin, None, started)
                return merged, (*layers, chit.layers[-1]), False
            if chit is not None:  # the stage changed, the files it gives did not: a hit, as in BuildKit
                self._note_hit(chit)
                self._add_hit(content[0], content[1], chit, slot)
                for definition, given in definitions:
                    self._add_hit(definition, copykeys.alias_inputs(given, content[0]),
                                  replace(chit, origin="this build"), slot)
                self.progress.cached(vertex, chit.origin)
                self._report(vertex, name, content[0], True, chit.origin, None, started)
                return content[0], chit.layers, False
        reason = "--no-cache-filter" if stage.index in self.options.no_cache_stages else \
            self._explain(slot, inputs, upstream)
        if reason:
            self.progress.miss(vertex, reason)
        try:
            layer = await self._execute(stage, step, () if link is not None else layers, source, vertex)
        except _Unavailable as exc:
            stale = self._stale(layers, source)
            if stale:
                self.progress.miss(vertex, f"cached parent layers unreadable: {exc}")
                raise _StaleCache(stale, str(exc)) from exc
            raise self._fail(vertex, step, str(exc) or type(exc).__name__) from exc
        except Exception as exc:  # the step failed, or materialising its parent did (mount, pull, unpack)
            raise self._fail(vertex, step, str(exc) or type(exc).__name__) from exc
        chain = (*layers, layer)
        created = layer.created or utc_now()
        if link is not None:  # COPY --link: the one layer under its base-independent key (copykeys), merged
            assert isinstance(step, CopyStep)
            made = CachedResult(content[0] if content else cachekey.key_of(link), (layer,), created, "this build")
            links = [link, *(given for _, given in definitions[1:])]
            key = self._record_link(step, parent, key, inputs, links, made, layers)
            self.memo[key] = CachedResult(key, chain, created, "this build")
            self.progress.done(vertex)
            self._report(vertex, name, key, False, None, reason, started)
            return key, chain, True
        if content is not None:  # the definition keys are recorded as aliases of the content key
            alias = CachedResult(content[0], chain, created, "this build")
            for definition, given in definitions:
                self._add_hit(definition, copykeys.alias_inputs(given, content[0]), alias, slot)
            key, inputs = content
        result = CachedResult(key, chain, created, "local")
        self.memo[key] = replace(result, origin="this build")
        for exporter in self.exporters:
            self._emit(exporter, partial(exporter.add, key, inputs, result, slot=slot))
        self.progress.done(vertex)
        self._report(vertex, name, key, False, None, reason, started)
        return key, chain, True

    async def _content_key(
        self, vertex: int, step: CopyStep, parent: Digest, source: StageResult
    ) -> tuple[Digest, dict[str, Any]]:
        """The content key of ``COPY --from=<stage>`` (the checksum of the files it selects in the solved stage)
        and the inputs its record keeps."""
        try:
            checksum = await self.executor.stage_checksum(step, source.layers)
        except Exception as exc:
            stale = self._stale((), source)
            if stale:
                self.progress.miss(vertex, f"cached layers of the source stage unreadable: {exc}")
                raise _StaleCache(stale, str(exc)) from exc
            raise self._fail(vertex, step, str(exc) or type(exc).__name__) from exc
        # recorded without the checksum: a later hit through the alias cannot know it, and both record the same
        return cachekey.key_of(copykeys.content_inputs(step, parent, checksum)), \
            copykeys.content_inputs(step, parent, None)

    def _fail(self, vertex: int, step: Step, detail: str) -> BuildError:
        message = f"{self._where(step.line)}: {step.shown or step.created_by}: {detail}"
        self.progress.error(vertex, message)
        return BuildError(message)

    def _report(
        self, vertex: int, name: str, key: Digest, cached: bool, origin: str | None, reason: str | None, t0: float
    ) -> None:
        seconds = asyncio.get_running_loop().time() - t0
        self.reports.append(StepReport(vertex, name, key, cached, origin, reason, seconds))

    def _lookup(self, key: Digest) -> CachedResult | None:
        for importer in self.importers:
            hit = importer.lookup(key)
            if hit is not None and not any(self._unusable(layer) for layer in hit.layers):
                return hit
        return None

    def _stale(self, layers: tuple[LayerRef, ...], source: SourceImage | StageResult | None) -> set[Digest]:
        """The lazy, not-yet-local cached blobs a failed materialisation may have tripped on."""
        chain = (*layers, *(source.layers if isinstance(source, StageResult) else ()))
        return {
            layer.descriptor.digest
            for layer in chain
            if layer.source is not None
            and (layer.descriptor.digest, layer.source) not in self._base_blobs
            and not self.state.content.has(layer.descriptor.digest)
        }

    def _no_cache(self, stage: Stage) -> bool:
        """--no-cache, or --no-cache-filter naming this stage: its steps never hit a cache."""
        return self.options.no_cache or stage.index in self.options.no_cache_stages

    def _explain(self, slot: str, inputs: dict[str, Any], upstream: str | None) -> str | None:
        if self.options.no_cache:
            return "--no-cache"
        if upstream:
            return upstream
        for importer in self.importers:
            if isinstance(importer, MissExplainer):
                reason = importer.explain(slot, inputs)
                if reason:
                    return reason
        return "no cache record for this step"

    async def _execute(
        self,
        stage: Stage,
        step: Step,
        layers: tuple[LayerRef, ...],
        source: SourceImage | StageResult | None,
        vertex: int,
    ) -> LayerRef:
        def output(data: bytes) -> None:
            self.progress.log(vertex, data)

        try:
            lowers = await self.executor.materialize(layers)
        except Exception as exc:
            raise _Unavailable(str(exc) or type(exc).__name__) from exc
        if isinstance(step, RunStep):
            sources = await self._mount_sources(stage, step) if step.mounts else None
            return await self.executor.run(step, lowers, output=output, platform=stage.platform, mounts=sources)
        if isinstance(step, CopyStep):
            source_lowers: list[Path] | None = None
            if source is not None:
                try:
                    source_lowers = await self.executor.materialize(source.layers)
                except Exception as exc:
                    raise _Unavailable(str(exc) or type(exc).__name__) from exc
            return await self.executor.copy(step, lowers, context_dir=self.context_dir, source_lowers=source_lowers)
        return await self.executor.workdir(step, lowers)

    async def _mount_sources(self, stage: Stage, step: RunStep) -> MountSources:
        """What a RUN's mounts read: the materialised layers of each ``from=`` stage or image, and each
        mount's key input (a cache mount's seed identity)."""
        from lamina.build.mounts import MountSources  # only a RUN with mounts gets here

        lowers: dict[MountFrom, list[Path]] = {}
        for mount in step.mounts:
            origin = getattr(mount, "origin", None)
            if origin is None or origin in lowers or (origin.stage is None and origin.image is None):
                continue
            if origin.stage is not None:
                layers = (await self._task(origin.stage)).layers  # raises BuildError if that stage failed
            elif origin.image == "scratch":  # from=scratch: an empty root, as BuildKit's llb.Scratch()
                layers = ()
            else:
                assert origin.image is not None
                layers = (await self.images.resolve(origin.image, stage.platform)).layers
            try:
                lowers[origin] = await self.executor.materialize(layers)
            except Exception as exc:
                raise _Unavailable(str(exc) or type(exc).__name__) from exc
        return MountSources(lowers, tuple(await self.demand.mount_inputs(stage.index, step)))


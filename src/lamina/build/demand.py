"""Which stages a build must really solve, decided from cache keys alone, before anything executes.

Keys are pure functions of the steps' inputs (:mod:`lamina.build.cachekey`), so every key of every stage
is known without executing a step: the base image's manifest digest, the context checksums of COPY, and
the keys of the stages a ``COPY --from`` reads. A stage is needed when it is the target, when a needed
stage is built ``FROM`` it, or when a needed stage has a ``COPY --from`` it that misses the cache (a
step after a miss always misses). A ``COPY --from=builder`` that hits needs only ``builder``'s key — so
a fully cached multi-stage build, as ``--cache-to mode=min`` exports it, never re-runs the builder
stage (BuildKit behaves the same way). Checksums and keys are memoised for the solver to reuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lamina.build import cachekey
from lamina.build.images import ImageSource
from lamina.build.ops import BaseImage, BuildGraph, CopyStep, MetaStep, StageBase, Step
from lamina.oci import Digest

__all__ = ["Demand"]


class Demand:
    def __init__(
        self,
        graph: BuildGraph,
        images: ImageSource,
        checksum: Callable[[CopyStep], str],
        has: Callable[[Digest], bool],
        *,
        no_cache: bool = False,
    ) -> None:
        self.graph = graph
        self.images = images
        self._checksum = checksum  # blocking: runs in a thread
        self._has = has  # is there a cache hit for this key (in any importer)?
        self.no_cache = no_cache
        self._keys: dict[int, asyncio.Task[list[tuple[Step, Digest]]]] = {}
        self._bases: dict[int, asyncio.Task[Digest]] = {}
        self._checksums: dict[int, asyncio.Task[str]] = {}

    def checksum(self, step: CopyStep) -> asyncio.Task[str]:
        """The context checksum of a COPY from the build context, computed once per build."""
        task = self._checksums.get(id(step))
        if task is None:
            task = self._checksums[id(step)] = asyncio.ensure_future(asyncio.to_thread(self._checksum, step))
        return task

    async def copy_inputs(self, stage_index: int, step: CopyStep) -> dict[str, Any]:
        """The extra key inputs of a COPY: the source stage's key, the source image's digest, or the checksum."""
        if step.from_stage is not None:
            return {"source_stage": await self.stage_key(step.from_stage)}
        if step.from_image is not None:
            image = await self.images.resolve(step.from_image, self.graph.stage(stage_index).platform)
            return {"source_image": image.manifest_digest}
        return {"content": await self.checksum(step)}

    async def base_key(self, index: int) -> Digest:
        task = self._bases.get(index)
        if task is None:
            task = self._bases[index] = asyncio.ensure_future(self._base_key(index))
        return await task

    async def _base_key(self, index: int) -> Digest:
        stage = self.graph.stage(index)
        base = stage.base
        if isinstance(base, StageBase):
            return await self.stage_key(base.stage)
        if isinstance(base, BaseImage):
            image = await self.images.resolve(base.ref, stage.platform)
            return cachekey.key_of(cachekey.image_inputs(image.manifest_digest, stage.platform))
        return cachekey.key_of(cachekey.scratch_inputs(stage.platform))

    async def step_keys(self, index: int) -> list[tuple[Step, Digest]]:
        """Each layer-producing step of the stage with its cache key, in order."""
        task = self._keys.get(index)
        if task is None:
            task = self._keys[index] = asyncio.ensure_future(self._step_keys(index))
        return await task

    async def _step_keys(self, index: int) -> list[tuple[Step, Digest]]:
        key = await self.base_key(index)
        out: list[tuple[Step, Digest]] = []
        for step in self.graph.stage(index).steps:
            if isinstance(step, MetaStep):
                continue
            extra = await self.copy_inputs(index, step) if isinstance(step, CopyStep) else {}
            inputs = cachekey.step_inputs(step, key, **extra)
            assert inputs is not None
            key = cachekey.key_of(inputs)
            out.append((step, key))
        return out

    async def stage_key(self, index: int) -> Digest:
        keys = await self.step_keys(index)
        return keys[-1][1] if keys else await self.base_key(index)

    async def needed(self) -> set[int]:
        """The stages to solve for the target (see the module docstring)."""
        needed: set[int] = set()
        todo = [self.graph.target]
        while todo:
            index = todo.pop()
            if index in needed:
                continue
            needed.add(index)
            base = self.graph.stage(index).base
            if isinstance(base, StageBase):
                todo.append(base.stage)
            missed = self.no_cache
            for step, key in await self.step_keys(index):
                missed = missed or not self._has(key)
                if missed and isinstance(step, CopyStep) and step.from_stage is not None:
                    todo.append(step.from_stage)
        return needed

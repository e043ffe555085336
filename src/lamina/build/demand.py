"""Which stages a build must really solve, decided from cache keys alone, before anything executes.

Keys are pure functions of the steps' inputs (:mod:`lamina.build.cachekey`), so every key of every stage
is known without executing a step: the base image's manifest digest, the context checksums of COPY, and
the keys of the stages a ``COPY --from`` reads. A stage is needed when it is the target, when a needed
stage is built ``FROM`` it, or when a needed stage has a ``COPY --from`` it that misses the cache (a
step after a miss always misses). A ``COPY --from=builder`` that hits needs only ``builder``'s key — so
a fully cached multi-stage build, as ``--cache-to mode=min`` exports it, never re-runs the builder
stage (BuildKit behaves the same way). Checksums and keys are memoised for the solver to reuse.
A ``COPY --from`` whose definition key hits continues from the content key its record names
(:mod:`lamina.build.copykeys`), as the solver does; one that misses keeps the definition key here,
which is sound (a pure function of the inputs) for the stages that read this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lamina.build import cachekey, copykeys
from lamina.build.images import ImageSource
from lamina.build.ops import BaseImage, BuildGraph, CopyStep, MetaStep, RunStep, StageBase, Step
from lamina.oci import Digest

if TYPE_CHECKING:
    from lamina.build.mounts import MountFrom

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
        mount_checksum: Callable[[MountFrom, str], str] | None = None,
        chain_key: Callable[[Digest], Digest | None] | None = None,
    ) -> None:
        self.graph = graph
        self._chain_key = chain_key  # a hit's key: a COPY --from definition key answers with its content key
        self._mount_checksum = mount_checksum  # blocking: a RUN --mount bind's context content
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

    async def step_extra(self, stage_index: int, step: Step) -> dict[str, Any]:
        """The extra key inputs of a COPY (:meth:`copy_inputs`) or of a RUN with mounts (:meth:`mount_inputs`)."""
        if isinstance(step, CopyStep):
            return await self.copy_inputs(stage_index, step)
        if isinstance(step, RunStep) and step.mounts:
            return {"mounts": await self.mount_inputs(stage_index, step)}
        return {}

    async def mount_inputs(self, stage_index: int, step: RunStep) -> list[str | None]:
        """Per RUN --mount, what it reads (see lamina.build.cachekey): a bind's context checksum, a ``from=``
        stage's key or image's digest; None for what never enters a key (cache content, secrets, sockets)."""
        from lamina.build.mounts import BindMount, CacheMount  # only a RUN with mounts gets here

        out: list[str | None] = []
        for mount in step.mounts:
            if not isinstance(mount, (BindMount, CacheMount)):
                out.append(None)
                continue
            origin = mount.origin
            if origin.stage is not None:
                out.append(str(await self.stage_key(origin.stage)))
            elif origin.image == "scratch":
                out.append("scratch")
            elif origin.image is not None:
                image = await self.images.resolve(origin.image, self.graph.stage(stage_index).platform)
                out.append(str(image.manifest_digest))
            elif (origin.context is not None or isinstance(mount, BindMount)) and self._mount_checksum is not None:
                out.append(await asyncio.to_thread(self._mount_checksum, origin, mount.source))
            else:
                out.append(None)
        return out

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
            extra = await self.step_extra(index, step)
            parent = key
            inputs, link = copykeys.step_inputs(step, parent, self.graph.stage(index).platform, **extra)
            key = cachekey.key_of(inputs)
            if isinstance(step, CopyStep) and step.from_stage is not None and self._chain_key is not None \
                    and not self.no_cache:  # a miss keeps the definition key (sound, if less often hit)
                resolved = self._chain_key(key)
                if resolved is None and link is not None:  # --link: the link layer's content key, merged
                    layer = self._chain_key(cachekey.key_of(link))
                    if layer is not None and layer != cachekey.key_of(link):
                        resolved = cachekey.key_of(cachekey.merge_inputs(parent, layer))
                key = resolved or key
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
                if missed and isinstance(step, RunStep) and step.mounts:  # a RUN that executes mounts its
                    from lamina.build.mounts import BindMount, CacheMount  # from= stages (loaded for mounts only)

                    todo.extend(m.origin.stage for m in step.mounts
                                if isinstance(m, (BindMount, CacheMount)) and m.origin.stage is not None)
        return needed

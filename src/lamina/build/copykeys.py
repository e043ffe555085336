"""Cache keys of the COPY steps BuildKit keys specially: ``COPY --link`` (a MergeOp) — shared by the
solver, which executes steps, and :mod:`lamina.build.demand`, which decides from keys alone.

BuildKit turns ``COPY --link src dest`` (without ``--chmod``) into ``Merge(base, Scratch().File(copy))``:
the copy runs on an empty root, so its cache key does not depend on the base, and the merge only stacks
its one-layer result on top. A new base image therefore misses the merged step but still hits the link
layer — the same blob, byte for byte, pushed again without being rebuilt. Lamina keys it the same way:

- the *link key* ``L`` is the ordinary COPY inputs document with ``parent`` = the scratch key of the
  stage's platform (:func:`link_inputs`); its record's result is the one layer;
- the step's key is ``{"op": "merge", "parent": K, "layer": L}`` (:func:`lamina.build.cachekey.merge_inputs`);
  its record's result is the parent's chain plus that layer, and the remote cache links it to both
  inputs, as BuildKit's merge records are.
"""

from __future__ import annotations

from typing import Any

from lamina.build import cachekey
from lamina.build.ops import CopyStep, Step
from lamina.oci import Digest, Platform

__all__ = ["is_linked", "link_inputs", "scratch_key", "step_inputs"]

Inputs = dict[str, Any]


def is_linked(step: Step) -> bool:
    """A ``COPY --link`` BuildKit merges (the frontend clears ``link`` when it would not)."""
    return isinstance(step, CopyStep) and step.link


def scratch_key(platform: Platform) -> Digest:
    return cachekey.key_of(cachekey.scratch_inputs(platform))


def link_inputs(step: CopyStep, platform: Platform, **extra: Any) -> Inputs:
    """The inputs of the copy made on an empty root: what the link layer's record is keyed by."""
    return cachekey.copy_inputs(step, scratch_key(platform), **extra)


def step_inputs(step: Step, parent: Digest, platform: Platform, **extra: Any) -> tuple[Inputs, Inputs | None]:
    """The step's inputs document on ``parent`` and, for a linked COPY, the link layer's inputs."""
    if is_linked(step):
        assert isinstance(step, CopyStep)
        link = link_inputs(step, platform, **extra)
        return cachekey.merge_inputs(parent, cachekey.key_of(link)), link
    inputs = cachekey.step_inputs(step, parent, **extra)
    assert inputs is not None, "a MetaStep has no inputs of its own"
    return inputs, None

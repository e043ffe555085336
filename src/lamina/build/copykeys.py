"""Cache keys of the COPY steps BuildKit keys specially — ``COPY --link`` (a MergeOp) and
``COPY --from=<stage>`` (by content) — shared by the solver, which executes steps, and
:mod:`lamina.build.demand`, which decides from keys alone.

BuildKit turns ``COPY --link src dest`` (without ``--chmod``) into ``Merge(base, Scratch().File(copy))``:
the copy runs on an empty root, so its cache key does not depend on the base, and the merge only stacks
its one-layer result on top. A new base image therefore misses the merged step but still hits the link
layer — the same blob, byte for byte, pushed again without being rebuilt. Lamina keys it the same way:

- the *link key* ``L`` is the ordinary COPY inputs document with ``parent`` = the scratch key of the
  stage's platform (:func:`link_inputs`); its record's result is the one layer;
- the step's key is ``{"op": "merge", "parent": K, "layer": L}`` (:func:`lamina.build.cachekey.merge_inputs`);
  its record's result is the parent's chain plus that layer, and the remote cache links it to both
  inputs, as BuildKit's merge records are.

BuildKit keys ``COPY --from=<stage>`` twice: by definition (the source's cache key) and by the content it
copies (a checksum of the selected files). A builder stage that changed without changing the copied files
(a dependency added that leaves the binary alone) misses the first but hits the second, so the COPY and
every step after it are cache hits and the final stage does not run again. Lamina does the same:

- the *definition key* ``A`` (``"from": {"stage": S}``) needs only the source stage's key, so a fully
  cached build decides without solving the source stage (:mod:`lamina.build.demand`);
- the *content key* ``B`` (:func:`content_inputs`: ``"from": "stage-files"``, ``content`` = the checksum of
  the selected files of the solved stage, owners included) is the key the stage's chain continues from;
- ``B``'s record keeps its inputs with ``content`` = null: a hit through the alias cannot know the checksum,
  and both ways of reaching ``B`` must record the same document (a re-export stays byte-identical);
- ``A``'s record is an *alias* of ``B``: same result, and its inputs name ``content_key`` = ``B``
  (:data:`ALIAS_FIELD`; in a remote cache, an input link to ``B`` with selector :data:`ALIAS_SELECTOR`), so a
  hit on ``A`` continues the chain from ``B`` without computing the checksum.

``COPY --link --from=<stage>`` combines both: the link layer's definition key ``L`` is an alias of its
content key (keyed on scratch), and the step continues from the merge onto that content key, itself
recorded with the merge of ``L`` as its alias.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lamina.build import cachekey
from lamina.build.ops import CopyStep, Step
from lamina.oci import Digest, Platform

__all__ = [
    "ALIAS_FIELD",
    "ALIAS_SELECTOR",
    "AliasResolver",
    "alias_inputs",
    "content_inputs",
    "is_linked",
    "link_inputs",
    "scratch_key",
    "step_inputs",
]

Inputs = dict[str, Any]
ALIAS_FIELD = "content_key"  # in a definition key's inputs: the content key it stands for
ALIAS_SELECTOR = "lamina.content-key"  # the cacheconfig link selector of that input (BuildKit ignores it)


@runtime_checkable
class AliasResolver(Protocol):
    """Optional importer role: the content key a definition key's record names, even when the record keeps
    no result (``mode=min`` exports other stages' records as links only)."""

    def alias(self, key: Digest) -> Digest | None: ...


def is_linked(step: Step) -> bool:
    """A ``COPY --link`` BuildKit merges (the frontend clears ``link`` when it would not)."""
    return isinstance(step, CopyStep) and step.link


def scratch_key(platform: Platform) -> Digest:
    return cachekey.key_of(cachekey.scratch_inputs(platform))


def link_inputs(step: CopyStep, platform: Platform, **extra: Any) -> Inputs:
    """The inputs of the copy made on an empty root: what the link layer's record is keyed by."""
    return cachekey.copy_inputs(step, scratch_key(platform), **{"content": None, **extra})


def step_inputs(step: Step, parent: Digest, platform: Platform, **extra: Any) -> tuple[Inputs, Inputs | None]:
    """The step's inputs document on ``parent`` and, for a linked COPY, the link layer's inputs."""
    if is_linked(step):
        assert isinstance(step, CopyStep)
        link = link_inputs(step, platform, **extra)
        return cachekey.merge_inputs(parent, cachekey.key_of(link)), link
    inputs = cachekey.step_inputs(step, parent, **extra)
    assert inputs is not None, "a MetaStep has no inputs of its own"
    return inputs, None


def content_inputs(step: CopyStep, parent: Digest, content: str | None) -> Inputs:
    """``COPY --from=<stage>`` keyed by the checksum of the files it copies (not the stage's key); ``None``
    when only the key is known (a hit through the alias), for the record's links."""
    inputs = cachekey.copy_inputs(step, parent, content=content)
    inputs["from"] = "stage-files"
    return inputs


def alias_inputs(definition: Inputs, content_key: Digest) -> Inputs:
    """The definition key's inputs recorded as an alias of ``content_key`` (the key is not recomputed)."""
    return {**definition, ALIAS_FIELD: str(content_key)}

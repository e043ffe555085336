"""Named build contexts in the frontend: which stage, ``FROM`` image or ``--from`` a ``--build-context`` replaces.

BuildKit's dockerfile2llb asks for a named context wherever the Dockerfile names a stage or an image
(see :mod:`lamina.build.namedcontexts` for the lookup rules): a stage whose ``AS`` name is a context is
not built (``noinit``) and stands for the context; ``FROM ref`` and ``COPY --from=ref`` naming no stage
take the context that ``ref``'s familiar name selects. Image and OCI-layout contexts become the image
reference the build resolves; a directory context is a source of files (``COPY --from``, ``RUN --mount
from=``) and, as a ``FROM`` base, scratch plus its files: one layer, as BuildKit's local source gives
(BuildKit appends that layer's history entry, ``local source for NAME``, at the end of the history;
lamina writes ``COPY . /`` in its place).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.build.namedcontexts import DirContext, ImageContext, NamedContext, lookup_context
from lamina.build.ops import BaseImage, Scratch
from lamina.oci import Platform

from .parse import Instruction

__all__ = ["context_base", "dir_context_for", "image_context_ref", "replace_named_stages"]


def context_base(context: NamedContext) -> BaseImage | Scratch:
    """The stage base an image or layout context stands for (``docker-image://scratch``: scratch)."""
    if isinstance(context, DirContext):
        raise TypeError("a directory context is not an image")
    if isinstance(context, ImageContext) and context.ref == "scratch":
        return Scratch()
    return BaseImage(context.ref)


def _load_dir(context: DirContext, line: int) -> Instruction:
    """A stage that starts from a directory context: scratch plus its files as the first layer (BuildKit's
    ``llb.Local`` state), written as the ``COPY --from=NAME . /`` that makes exactly that layer."""
    text = f"COPY --from={context.name} . /"
    return Instruction("COPY", (".", "/"), False, (f"--from={context.name}",), (), text, line, line)


def replace_named_stages(stages: list[Any], contexts: Mapping[str, NamedContext]) -> None:
    """Apply the named contexts to the converted stages (BuildKit's order: stage names, then FROM images).

    ``stages`` are convert's ``_Stage`` records (``name``, ``base``, ``platform``, ``line``, ``commands``),
    changed in place: a stage a context replaces keeps no instructions of its own; one that starts from a
    directory context is scratch plus the directory's files.
    """
    if not contexts:
        return
    for stage in stages:
        replaced = lookup_context(contexts, stage.name, stage.platform, stage=True) if stage.name else None
        if replaced is None and isinstance(stage.base, BaseImage):
            hit = lookup_context(contexts, stage.base.ref, stage.platform)
            if hit is None:
                continue
            if not isinstance(hit, DirContext):
                stage.base = context_base(hit)
                continue
            stage.base = Scratch()
            stage.commands = [_load_dir(hit, stage.line), *stage.commands]
            continue
        if replaced is None:
            continue
        if isinstance(replaced, DirContext):
            stage.base, stage.commands = Scratch(), [_load_dir(replaced, stage.line)]
        else:
            stage.base, stage.commands = context_base(replaced), []


def dir_context_for(contexts: Mapping[str, NamedContext], value: str, platform: Platform | None) -> str | None:
    """The directory context ``--from=value`` names (as written, as a stage name or an image name), if any."""
    if isinstance(contexts.get(value), DirContext):
        return value
    for stage in (True, False):
        hit = lookup_context(contexts, value.lower() if stage else value, platform, stage=stage)
        if isinstance(hit, DirContext):
            return hit.name
    return None


def image_context_ref(contexts: Mapping[str, NamedContext], value: str, platform: Platform | None) -> str | None:
    """The image reference an image/layout context puts in place of ``--from=value`` (an image name)."""
    hit = lookup_context(contexts, value, platform)
    return None if hit is None or isinstance(hit, DirContext) else hit.ref

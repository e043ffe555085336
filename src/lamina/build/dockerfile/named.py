"""Named build contexts in the frontend: which stage, ``FROM`` image or ``--from`` a ``--build-context`` replaces.

BuildKit's dockerfile2llb asks for a named context wherever the Dockerfile names a stage or an image
(see :mod:`lamina.build.namedcontexts` for the lookup rules): a stage whose ``AS`` name is a context is
not built (``noinit``) and stands for the context; ``FROM ref`` and ``COPY --from=ref`` naming no stage
take the context that ``ref``'s familiar name selects. Image and OCI-layout contexts become the image
reference the build resolves; a directory context is a source of files (``COPY --from``, ``RUN --mount
from=``), and refused as a ``FROM`` base with a line saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.build.namedcontexts import DirContext, ImageContext, NamedContext, lookup_context
from lamina.build.ops import BaseImage, Scratch, StageBase
from lamina.oci import Platform

from .errors import DockerfileError

__all__ = ["context_base", "dir_context_for", "image_context_ref", "refuse_dir_target", "replace_named_stages"]


def context_base(context: NamedContext) -> BaseImage | Scratch:
    """The stage base an image or layout context stands for (``docker-image://scratch``: scratch)."""
    if isinstance(context, DirContext):
        raise TypeError("a directory context is not an image")
    if isinstance(context, ImageContext) and context.ref == "scratch":
        return Scratch()
    return BaseImage(context.ref)


def _refuse_dir(context: DirContext, what: str, line: int) -> DockerfileError:
    return DockerfileError(
        f"{what}: {context.flag} is a directory; lamina uses directory contexts in COPY --from and "
        "RUN --mount from= only (use docker-image:// or oci-layout:// to replace a base image)",
        line,
    )


def replace_named_stages(stages: list[Any], contexts: Mapping[str, NamedContext]) -> dict[int, DirContext]:
    """Apply the named contexts to the converted stages (BuildKit's order: stage names, then FROM images).

    ``stages`` are convert's ``_Stage`` records (``name``, ``base``, ``platform``, ``line``, ``commands``),
    changed in place: a replaced stage keeps no instructions of its own. Returns the stages a directory
    replaced (by index): they are sources of files only (``COPY --from``, ``RUN --mount from=``).
    """
    dir_stages: dict[int, DirContext] = {}
    if not contexts:
        return dir_stages
    for index, stage in enumerate(stages):
        replaced = lookup_context(contexts, stage.name, stage.platform, stage=True) if stage.name else None
        if replaced is not None:
            stage.commands = []
            stage.base = Scratch() if isinstance(replaced, DirContext) else context_base(replaced)
            if isinstance(replaced, DirContext):
                dir_stages[index] = replaced
            continue
        if isinstance(stage.base, StageBase):
            source = stages[stage.base.stage]
            hit = lookup_context(contexts, source.name, stage.platform, stage=True) if source.name else None
            if isinstance(hit, DirContext):
                raise _refuse_dir(hit, f"FROM {source.name}", stage.line)
        elif isinstance(stage.base, BaseImage):
            hit = lookup_context(contexts, stage.base.ref, stage.platform)
            if isinstance(hit, DirContext):
                raise _refuse_dir(hit, f"FROM {stage.base.ref}", stage.line)
            if hit is not None:
                stage.base = context_base(hit)
    return dir_stages


def refuse_dir_target(dir_stages: Mapping[int, DirContext], target: int, line: int) -> None:
    """The target stage cannot be one a directory context replaced: that would be an image of the directory."""
    context = dir_stages.get(target)
    if context is not None:
        raise _refuse_dir(context, f"--target {context.name}", line)


def dir_context_for(contexts: Mapping[str, NamedContext], value: str, platform: Platform | None) -> str | None:
    """The directory context ``--from=value`` names (as a stage name or an image name), if any."""
    for stage in (True, False):
        hit = lookup_context(contexts, value.lower() if stage else value, platform, stage=stage)
        if isinstance(hit, DirContext):
            return hit.name
    return None


def image_context_ref(contexts: Mapping[str, NamedContext], value: str, platform: Platform | None) -> str | None:
    """The image reference an image/layout context puts in place of ``--from=value`` (an image name)."""
    hit = lookup_context(contexts, value, platform)
    return None if hit is None or isinstance(hit, DirContext) else hit.ref

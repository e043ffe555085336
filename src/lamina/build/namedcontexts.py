"""``--build-context NAME=VALUE``: named contexts, as buildx passes them and BuildKit's frontend uses them.

A value is a local directory (``NAME=../src``), ``docker-image://REF`` or ``oci-layout://PATH[:TAG|@DIGEST]``
(tag ``latest`` when neither is given, as buildx's parseOCILayoutPath does). BuildKit's Dockerfile frontend
looks a name up where the Dockerfile names a stage or an image:

- a stage whose ``AS`` name is a named context is replaced by it: its instructions are not run, and
  ``FROM name`` / ``COPY --from=name`` / ``RUN --mount=from=name`` get the context instead;
- ``FROM ref`` and ``COPY --from=ref`` that name no stage look ``ref`` up by its familiar form with
  ``:latest`` dropped (``docker.io/library/alpine:latest`` -> ``alpine``), first as ``NAME::PLATFORM``
  (``alpine::linux/amd64``), then as ``NAME``; a hit replaces the image by the context.

A directory context is read with its own ``.dockerignore`` (at its root), as BuildKit's ``local`` named
context does; it can be copied from, bind-mounted, or be a stage's root filesystem (``FROM NAME``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.oci import Digest, DigestError, Platform, ReferenceError, parse_digest, parse_reference

if TYPE_CHECKING:
    from lamina.build.context import SourceTree
    from lamina.build.ops import BuildGraph

__all__ = [
    "DirContext",
    "ImageContext",
    "LayoutContext",
    "NamedContext",
    "check_stage_filter",
    "familiar_name",
    "load_dir_contexts",
    "lookup_context",
    "parse_build_contexts",
    "parse_stage_filter",
]

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$")


@dataclass(frozen=True, slots=True)
class DirContext:
    """``NAME=DIR``: files from a local directory (its own .dockerignore applies)."""

    name: str
    path: Path

    @property
    def flag(self) -> str:
        return f"--build-context {self.name}={self.path}"


@dataclass(frozen=True, slots=True)
class ImageContext:
    """``NAME=docker-image://REF``: an image in a registry (``scratch`` = the empty image)."""

    name: str
    ref: str

    @property
    def flag(self) -> str:
        return f"--build-context {self.name}=docker-image://{self.ref}"


@dataclass(frozen=True, slots=True)
class LayoutContext:
    """``NAME=oci-layout://PATH[:TAG|@DIGEST]``: an image in a local OCI image layout directory."""

    name: str
    path: Path
    tag: str | None = "latest"
    digest: Digest | None = None

    @property
    def ref(self) -> str:
        """The image reference :class:`~lamina.build.images.RegistryImages` resolves from the layout."""
        return f"oci-layout://{self.path}" + (f"@{self.digest}" if self.digest else f":{self.tag}")

    @property
    def flag(self) -> str:
        return f"--build-context {self.name}={self.ref}"


NamedContext = DirContext | ImageContext | LayoutContext


def _layout(name: str, text: str, value: str) -> LayoutContext:
    """buildx's parseOCILayoutPath: ``PATH@sha256:...`` or ``PATH:TAG`` or ``PATH`` (tag latest)."""
    path, digest, tag = text, None, "latest"
    at = text.rfind("@")
    if at != -1:
        path = text[:at]
        try:
            digest = parse_digest(text[at + 1:])
        except DigestError as exc:
            raise ValueError(f"--build-context {name}={value}: {exc}") from None
        tag = None
    else:
        colon = text.rfind(":")
        if colon != -1 and "/" not in text[colon + 1:]:
            path, tag = text[:colon], text[colon + 1:]
            if not tag:
                raise ValueError(f"--build-context {name}={value}: empty tag after ':'")
    if not path:
        raise ValueError(f"--build-context {name}={value}: expected oci-layout://PATH[:TAG|@DIGEST]")
    layout = Path(path)
    if not (layout / "index.json").is_file():
        raise ValueError(f"--build-context {name}={value}: {layout} is not an OCI image layout (no index.json)")
    return LayoutContext(name, layout.resolve(), tag, digest)


def _parse_one(text: str) -> NamedContext:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"invalid --build-context {text!r}: expected NAME=DIR|docker-image://REF|oci-layout://PATH")
    if not _NAME.match(name):
        raise ValueError(f"invalid --build-context {text!r}: {name!r} is not a valid context name")
    if value.startswith("docker-image://"):
        ref = value.removeprefix("docker-image://")
        if ref != "scratch":
            try:
                parse_reference(ref)
            except ReferenceError as exc:
                raise ValueError(f"--build-context {text}: {exc}") from None
        return ImageContext(name, ref)
    if value.startswith("oci-layout://"):
        return _layout(name, value.removeprefix("oci-layout://"), value)
    scheme = value.partition("://")[0] if "://" in value else None
    if scheme is not None or value.startswith(("git@", "target:", "input:")):
        raise ValueError(
            f"--build-context {text}: unsupported context source {value.split(':', 1)[0]!r} "
            "(lamina takes a directory, docker-image://REF or oci-layout://PATH)"
        )
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"--build-context {text}: {path} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ValueError(f"--build-context {text}: {path} is not readable")
    return DirContext(name, path.resolve())


def parse_build_contexts(values: Iterable[str]) -> dict[str, NamedContext]:
    """Every ``--build-context`` by name; naming one twice is an error (buildx keeps the last silently)."""
    out: dict[str, NamedContext] = {}
    for text in values:
        context = _parse_one(text)
        if context.name in out:
            raise ValueError(f"--build-context {text}: the name {context.name!r} is given twice")
        out[context.name] = context
    return out


def familiar_name(ref: str) -> str | None:
    """BuildKit's lookup key for an image name: its familiar form without ``:latest`` (None if no ref)."""
    try:
        reference = parse_reference(ref)
    except ReferenceError:
        return None
    repo = reference.repository
    name = repo.removeprefix("library/") if reference.registry == "docker.io" else f"{reference.registry}/{repo}"
    if reference.tag and reference.tag != "latest":
        name += f":{reference.tag}"
    if reference.digest:
        name += f"@{reference.digest}"
    return name


def lookup_context(
    contexts: Mapping[str, NamedContext], name: str, platform: Platform | None = None, *, stage: bool = False
) -> NamedContext | None:
    """The named context a Dockerfile name means, if any: a stage name as is, an image by its familiar form
    (``NAME::PLATFORM`` first, then ``NAME``)."""
    if not contexts:
        return None
    key = name if stage else familiar_name(name)
    if key is None:
        return None
    if platform is not None:
        hit = contexts.get(f"{key}::{platform}")
        if hit is not None:
            return hit
    return contexts.get(key)


def parse_stage_filter(values: Iterable[str]) -> frozenset[str]:
    """``--no-cache-filter`` values: stage names (lower-cased, as stage names are), comma lists, repeatable."""
    out: set[str] = set()
    for text in values:
        for item in text.split(","):
            item = item.strip()
            if not item:
                raise ValueError(f"invalid --no-cache-filter {text!r}: empty stage name")
            out.add(item.lower())
    return frozenset(out)


def check_stage_filter(names: frozenset[str], dockerfile: str, graph: BuildGraph) -> frozenset[int]:
    """The indexes of the stages ``--no-cache-filter`` names (BuildKit matches stage names, case-insensitively);
    a name no stage of the Dockerfile has is an error rather than a filter that silently filters nothing."""
    if not names:
        return frozenset()
    from lamina.build.dockerfile.parse import parse

    declared = set()
    for inst in parse(dockerfile).instructions:
        if inst.cmd == "FROM" and len(inst.args) == 3 and inst.args[1].lower() == "as":
            declared.add(inst.args[2].lower())
    unknown = sorted(names - declared)
    if unknown:
        listed = ", ".join(sorted(declared)) or "none named"
        raise ValueError(f"--no-cache-filter {','.join(unknown)}: no stage of that name (stages: {listed})")
    return frozenset(stage.index for stage in graph.stages if stage.name is not None and stage.name in names)


def load_dir_contexts(contexts: Mapping[str, NamedContext]) -> dict[str, SourceTree]:
    """Each directory context as COPY reads it: its files filtered by its own root ``.dockerignore``."""
    from lamina.build.context import SourceTree
    from lamina.build.dockerignore import load_ignore_patterns

    out: dict[str, SourceTree] = {}
    for name, context in contexts.items():
        if isinstance(context, DirContext):
            out[name] = SourceTree(context.path, load_ignore_patterns(context.path), label=f"build context {name!r}")
    return out

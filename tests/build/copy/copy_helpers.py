"""Shared by the COPY tests that build for real: a library build on a state dir, its plain progress, and the
layers of its image manifest."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

from lamina.build.builder import BuildRequest, BuildResult, build
from lamina.build.cacheopts import parse_cache_from, parse_cache_to
from lamina.build.progress import PlainProgress


def make_context(path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    for name, text in {"Dockerfile": dockerfile, **files}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def run_build(
    context: Path, root: Path, *, cache_from: tuple[str, ...] = (), cache_to: tuple[str, ...] = (),
    build_args: dict[str, str] | None = None, tags: tuple[str, ...] = (), push: bool = False,
) -> tuple[BuildResult, str]:
    """One build of ``context`` on state dir ``root``; the result and the plain progress text."""
    stream = io.StringIO()
    request = BuildRequest(
        context_dir=context, dockerfile=(context / "Dockerfile").read_text(), root=root, tags=tags, push=push,
        build_args=dict(build_args or {}), cache_from=tuple(parse_cache_from(c) for c in cache_from),
        cache_to=tuple(parse_cache_to(c) for c in cache_to),
    )
    result = asyncio.run(build(request, PlainProgress(stream)))
    return result, stream.getvalue()


def layer_digests(result: BuildResult) -> list[str]:
    return [layer["digest"] for layer in json.loads(result.manifest)["layers"]]


def status_of(progress: str, instruction: str) -> str:
    """The first status line (``CACHED ...``, ``MISS ...``, ``DONE ...``) of the step shown as ``instruction``."""
    vertex = None
    for line in progress.splitlines():
        number, _, rest = line.partition(" ")
        if vertex is None and rest.endswith("] " + instruction):
            vertex = number
        elif vertex is not None and number == vertex and not re.match(r"\d+\.\d+ ", rest):
            return rest
    raise AssertionError(f"no step {instruction!r} in:\n{progress}")


def ran(progress: str, marker: str) -> bool:
    """Whether a RUN printed ``marker`` as an output line (``#N 0.123 marker``)."""
    return re.search(rf"^#\d+ \d+\.\d+ {re.escape(marker)}$", progress, re.M) is not None

"""Shared by the remote-cache tests: build through the library, read the plain progress it printed."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

from lamina.build.builder import BuildRequest, BuildResult, build
from lamina.build.cacheopts import parse_cache_from, parse_cache_to
from lamina.build.progress import PlainProgress

# A small app build shared by the cache tests: WORKDIR, COPY a.txt, two RUNs that print ran-one / ran-two.
APP = """\
FROM {base}
WORKDIR /app
COPY a.txt /app/
RUN cat /app/a.txt > /app/out.txt && echo ran-one
RUN echo two > /app/two.txt && echo ran-two
"""


def make_context(path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def run_build(
    context: Path, root: Path, *, cache_from: tuple[str, ...] = (), cache_to: tuple[str, ...] = (),
    tags: tuple[str, ...] = (), push: bool = False, **extra: object,
) -> tuple[BuildResult, str]:
    """One build on state dir ``root``; returns the result and the plain progress text."""
    stream = io.StringIO()
    request = BuildRequest(
        context_dir=context, dockerfile=(context / "Dockerfile").read_text(), root=root, tags=tags, push=push,
        cache_from=tuple(parse_cache_from(c) for c in cache_from),
        cache_to=tuple(parse_cache_to(c) for c in cache_to), **extra,  # type: ignore[arg-type]
    )
    result = asyncio.run(build(request, PlainProgress(stream)))
    return result, stream.getvalue()


def step_status(progress: str) -> dict[str, str]:
    """step text (after ``[stage n/m] ``) -> its first status line (``CACHED (...)``, ``MISS ...``, ``DONE``)."""
    names: dict[str, str] = {}
    status: dict[str, str] = {}
    for line in progress.splitlines():
        vertex, _, rest = line.partition(" ")
        if not vertex.startswith("#"):
            continue
        if rest.startswith("[") and "] " in rest:
            names[vertex] = rest.split("] ", 1)[1]
        elif vertex in names and names[vertex] not in status and not re.match(r"\d+\.\d+ ", rest):
            status[names[vertex]] = rest
    return status


def ran(progress: str, marker: str) -> bool:
    """Whether a RUN printed ``marker`` as an output line (``#N 0.123 marker``)."""
    return re.search(rf"^#\d+ \d+\.\d+ {re.escape(marker)}$", progress, re.M) is not None

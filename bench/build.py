"""Time a cold build and a fully cached rebuild; print the overhead lamina adds per step.

Starts a lamina registry on loopback, pushes a busybox-static base image (skopeo), then builds a
sample Dockerfile twice with an empty state dir first. Each RUN step sleeps a known time, so the
overhead of a step is its wall time minus that sleep (snapshot mount, runc start, layer write, cache
record); COPY/WORKDIR steps are all overhead. Needs root (overlay mounts, runc).

    sudo .venv/bin/python bench/build.py
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.images import busybox_image, make_busybox_rootfs
from helpers.registries import start_lamina
from lamina.build.builder import BuildRequest, BuildResult, build
from lamina.build.progress import PlainProgress

DOCKERFILE = """\
FROM {base}
ENV APP_HOME=/app
WORKDIR /app
RUN mkdir -p /app/data && echo one > /app/data/one.txt && sleep 0.5
COPY files/ /app/files/
RUN cat /app/files/* > /app/data/all.txt && sleep 0.5
RUN i=0; while [ $i -lt 500 ]; do echo "line $i" >> /app/data/big.txt; i=$((i+1)); done && sleep 0.5
COPY config.ini /app/config.ini
RUN ls -la /app > /app/listing.txt && sleep 0.25
CMD ["cat", "/app/data/all.txt"]
"""
_SLEEP = re.compile(r"sleep ([0-9.]+)")


def _context(root: Path) -> Path:
    (root / "files").mkdir(parents=True)
    for i in range(20):
        (root / "files" / f"f{i:02}.txt").write_text(f"file {i}\n" * 100)
    (root / "config.ini").write_text("[app]\nname=bench\n")
    return root


def _report(title: str, result: BuildResult, total: float) -> None:
    print(f"\n{title}: {total:.2f}s total, {result.cached_steps}/{len(result.steps)} steps cached")
    print(f"  {'step':60} {'wall':>7} {'own':>6} {'overhead':>9}")
    overhead = 0.0
    for step in result.steps:
        own = 0.0 if step.cached else sum(float(s) for s in _SLEEP.findall(step.name))
        extra = step.seconds - own
        overhead += extra
        print(f"  {step.name[:60]:60} {step.seconds:7.3f} {own:6.2f} {extra:9.3f}")
    print(
        f"  overhead beyond the RUN commands' own time: {overhead:.3f}s "
        f"({overhead / max(len(result.steps), 1) * 1000:.0f} ms per step)"
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as tmp:
        work = Path(tmp)
        registry = start_lamina(work / "registry")
        try:
            base = busybox_image(registry, name="bench/busybox", rootfs=make_busybox_rootfs(work / "rootfs"))
            context = _context(work / "context")
            request = BuildRequest(
                context_dir=context,
                dockerfile=DOCKERFILE.format(base=base.reference),
                root=work / "state",
            )
            for title in ("cold build", "fully cached rebuild"):
                started = time.monotonic()
                result = asyncio.run(build(request, PlainProgress(io.StringIO())))
                _report(title, result, time.monotonic() - started)
        finally:
            registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

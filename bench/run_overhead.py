"""Per-RUN start-up cost of the RUN sandbox's network, against host networking in the same invocation.

Starts a lamina registry on loopback, pushes a busybox-static base image (skopeo), then builds a
Dockerfile of N trivial ``RUN true`` steps with ``--no-cache`` in each network mode, alternating the
modes round by round so that load on the machine hits them alike:

- ``default``: the sandbox (own network namespace served by slirp4netns; the build prepares the next
  namespace while a RUN runs and tears used ones down in the background);
- ``none``: own empty network namespace (runc creates it);
- ``host``: the host's network namespace (``--allow network.host``), the behaviour before the sandbox.

A step's time is snapshot mount + runc start and exit + layer write + cache record (+ the network for
``default``); the figure is the median per RUN step over every round. Needs root (overlay, runc).

    sudo .venv/bin/python bench/run_overhead.py [--steps 20] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import lamina_commit
from helpers.images import busybox_image, make_busybox_rootfs
from helpers.registries import start_lamina
from lamina.build.builder import BuildRequest, build
from lamina.build.progress import PlainProgress

MODES = ("default", "none", "host")


def _dockerfile(base: str, steps: int) -> str:
    return f"FROM {base}\n" + "".join(f"RUN true {i}\n" for i in range(steps))


def _round(request: BuildRequest) -> list[float]:
    result = asyncio.run(build(request, PlainProgress(io.StringIO())))
    runs = [step.seconds for step in result.steps if " RUN " in f" {step.name} " and not step.cached]
    if len(runs) != request.dockerfile.count("\nRUN "):
        raise RuntimeError(f"expected every RUN to execute, got {len(runs)} executed steps")
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="RUN steps per build (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="builds per mode (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-bench-run-") as tmp:
        work = Path(tmp)
        registry = start_lamina(work / "registry")
        try:
            base = busybox_image(registry, name="bench/busybox", rootfs=make_busybox_rootfs(work / "rootfs"))
            dockerfile = _dockerfile(base.reference, args.steps)
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    request = BuildRequest(
                        context_dir=work,
                        dockerfile=dockerfile,
                        root=work / "state",
                        no_cache=True,
                        network=mode,
                        allow=frozenset({"network.host"}) if mode == "host" else frozenset(),
                    )
                    times[mode].extend(_round(request))
        finally:
            registry.stop()
    medians = {mode: statistics.median(values) * 1000 for mode, values in times.items()}
    figures = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lamina_commit": lamina_commit(),
        "steps_per_build": args.steps,
        "rounds": args.rounds,
        "ms_per_run": medians,
        "p90_ms_per_run": {mode: statistics.quantiles(v, n=10)[-1] * 1000 for mode, v in times.items()},
        "sandbox_minus_host_ms": medians["default"] - medians["host"],
        "ratio_sandbox_to_host": medians["default"] / medians["host"],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"RUN start-up overhead ({figures['date']}, lamina {figures['lamina_commit']}, "
          f"{args.steps} RUN steps x {args.rounds} rounds per mode, --no-cache)")  # fmt: skip
    print(f"  {'mode':10} {'median ms/RUN':>14} {'p90 ms/RUN':>11}")
    for mode in MODES:
        print(f"  {mode:10} {medians[mode]:14.1f} {figures['p90_ms_per_run'][mode]:11.1f}")
    print(f"  sandbox - host: {figures['sandbox_minus_host_ms']:+.1f} ms per RUN; "
          f"ratio sandbox / host: {figures['ratio_sandbox_to_host']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

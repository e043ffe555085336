"""The warm build's profile: a fresh ``lamina build`` process that finds every step cached in the registry
and pushes the image, timed phase by phase, optionally beside another lamina tree in the same run.

Starts a lamina registry on loopback (access log on), pushes the busybox-based image of
``bench/cache.py``, builds a five-step Dockerfile once with ``--cache-to mode=max``, then runs the warm
build N times as fresh processes on empty state dirs (a private bytecode cache, as an installed wheel has;
one untimed run fills it). With ``--compare-src DIR`` (another tree's ``src/``, e.g. ``git archive REV src``)
its processes alternate with this tree's, so both meet the same machine load. The Dockerfile has no
``COPY --from``, whose cache keys changed in issue 10: an older tree then still finds every step cached.

Per tree, best and median of: wall and CPU seconds of the process; its phases in wall-clock seconds —
interpreter start-up, imports (what ``lamina build`` of a cached build imports), the build (from the
first to the last line of ``main()``, split by the registry's access log into before the first request,
between the first and last request, and after it) and exit (``main()`` returned -> process reaped) —
and the number of requests. ``--importtime`` prints the slowest imports of one extra process.

    sudo .venv/bin/python bench/warm_profile.py [--runs 9] [--compare-src /tmp/old/src] [--importtime]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cache import _base_image, _context
from helpers.registries import RegistryProcess, start_lamina

HERE = Path(__file__).resolve().parent.parent / "src"
DOCKERFILE = """\
FROM {base}
ENV APP_HOME=/app
WORKDIR /app
COPY requirements.txt /tmp/
RUN mkdir -p /opt/deps && head -c 500000 /dev/urandom > /opt/deps/lib.so
COPY src/ /app/src/
RUN cat /app/src/*.py > /app/bundle.py
CMD ["sh", "-c", "wc -c /app/bundle.py"]
"""
# Run as `python -c`: the clock readings of each phase on stderr; main() as the `lamina` script calls it.
# The imports happen as in `lamina build` (main() without argv): with the collector paused and the imports
# frozen after it (lamina.gcpause), in a tree that has the pause.
_PROCESS = """\
import contextlib, sys, time
t0 = time.time()
from lamina.cli import main
try:
    from lamina.gcpause import collector_paused, own_process
except ImportError:  # a tree from before the pause
    collector_paused, own_process = contextlib.nullcontext, lambda: None
try:
    from lamina.dataclasscode import cached_dataclass_code
except ImportError:  # a tree from before the kept dataclass code
    cached_dataclass_code = contextlib.nullcontext
own_process()
with cached_dataclass_code():  # as main() without argv: the imports inside it (main's own is then a no-op)
    with collector_paused():
        import lamina.build.builder, lamina.build.cli, lamina.build.cache.setup
    t1 = time.time()
    sys.argv[0] = "lamina"
    rc = main()
t2 = time.time()
print(f"PHASES {t0!r} {t1!r} {t2!r}", file=sys.stderr)
sys.exit(rc)
"""


def _env(src: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(src)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _requests(registry: RegistryProcess, offset: int) -> list[float]:
    """Epoch times of the requests the access log recorded after ``offset``."""
    times = []
    for line in registry.log_path.read_text()[offset:].splitlines():
        if line.startswith("{"):
            stamp = json.loads(line)["time"].replace("Z", "+00:00")
            times.append(datetime.datetime.fromisoformat(stamp).timestamp())
    return times


def _warm(src: Path, pycache: Path, context: Path, registry: RegistryProcess, cache: str, state: Path,
          importtime: bool = False) -> dict[str, Any]:
    tag = f"{registry.host}/bench/app:warm"
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", _PROCESS, "build", "--progress",
            "plain", "--root", str(state), "--cache-from", cache, "-t", tag, "--push", str(context)]
    offset = registry.log_path.stat().st_size
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    proc = subprocess.run(argv, env=_env(src, pycache), capture_output=True, text=True, check=False)
    reaped = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or "PHASES " not in proc.stderr:
        raise SystemExit(f"warm build with {src} failed:\n{proc.stderr[-3000:]}")
    if importtime:
        return {"importtime": proc.stderr}
    t0, t1, t2 = (float(x) for x in proc.stderr.rsplit("PHASES ", 1)[1].split())
    requests = _requests(registry, offset)
    first, last = (requests[0], requests[-1]) if requests else (t2, t2)
    return {
        "wall": reaped - launched,
        "cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
        "startup": t0 - launched, "imports": t1 - t0, "build": t2 - t1, "exit": reaped - t2,
        "to_first_request": max(0.0, first - t1), "requests_span": last - first, "after_last_request": t2 - last,
        "requests": len(requests), "cached_steps": proc.stderr.count(" CACHED"),
    }


def _summary(samples: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    return {key: (round(min(s[key] for s in samples), 3), round(statistics.median(s[key] for s in samples), 3))
            for key in samples[0]}


def _slowest_imports(stderr: str, count: int = 25) -> list[tuple[int, str]]:
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, _, name = line.split(":", 1)[1].split("|")
            rows.append((int(self_us), name.strip()))
    return sorted(rows, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--compare-src", type=Path, metavar="DIR", help="another tree's src/, run alternately")
    parser.add_argument("--importtime", action="store_true", help="also print the slowest imports of one process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trees = {"this": HERE, **({"compare": args.compare_src.resolve()} if args.compare_src else {})}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="lamina-warm-profile-") as tmp:
        work = Path(tmp)
        registry = start_lamina(work / "registry", config="access_log = true\n")
        try:
            base = _base_image(registry, work)
            context = _context(work / "context")
            (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
            cache = f"{registry.host}/bench/app:cache"
            cold = [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(work / "cold"),
                    "--cache-to", f"type=registry,ref={cache},mode=max", "-t", f"{registry.host}/bench/app:cold",
                    "--push", str(context)]
            subprocess.run(cold, env=_env(HERE, work / "pycache-this"), check=True, capture_output=True)
            for i in range(-1, args.runs):  # -1: fills the bytecode caches, untimed
                for name, src in trees.items():
                    sample = _warm(src, work / f"pycache-{name}", context, registry, cache, work / f"s-{name}-{i}")
                    if i >= 0:
                        samples[name].append(sample)
            imports = (_warm(HERE, work / "pycache-this", context, registry, cache, work / "s-importtime", True)
                       if args.importtime else None)
        finally:
            registry.stop()
    report = {name: _summary(values) for name, values in samples.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, fig in report.items():
        label = f"{name} ({trees[name]})"
        print(f"{label}: best (median) of {args.runs}, seconds")
        for key, (best, median) in fig.items():
            print(f"  {key:20} {best:8.3f} ({median:.3f})")
    if imports is not None:
        print("slowest imports of one process (self time, us):")
        for self_us, name in _slowest_imports(imports["importtime"]):
            print(f"  {self_us:7} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

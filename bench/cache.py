"""The CI scenario of the remote cache: cold, warm from the registry with an empty local state, one-file change.

Starts a lamina registry (or CNCF distribution with ``--registry distribution``) on loopback and pushes
a base image with a few MB of files, then builds a two-stage dependency-install style Dockerfile
(a ``deps`` stage that installs, an app stage that copies the result and the sources):

- ``cold``: empty state, ``--cache-to mode=max`` (and a second cold build with ``mode=min``), image pushed;
- ``warm``: empty state, ``--cache-from``, image pushed to the same registry — every step cached, no
  layer byte downloaded; timed in-process and as a real ``lamina build`` process (what CI pays,
  Python start-up and imports included, broken down);
- ``change``: empty state, ``--cache-from``, one application file changed — only the layers under the
  changed COPY are pulled.

Prints times, bytes transferred and the export time of min vs max. With ``buildah`` installed, the same
scenario runs with ``buildah build --layers --runtime runc --network none --cache-to/--cache-from``
on fresh storage dirs in the same run (or the report says why it could not). Needs root.

    sudo .venv/bin/python bench/cache.py [--registry lamina|distribution] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.images import (
    image_manifest,
    layer_from_dir,
    layer_from_files,
    make_busybox_rootfs,
    push_layout,
    write_layout,
)
from helpers.registries import RegistryProcess, start_distribution, start_lamina
from lamina.build.builder import BuildRequest, BuildResult, build
from lamina.build.cacheopts import parse_cache_from, parse_cache_to
from lamina.build.progress import PlainProgress

DOCKERFILE = """\
FROM {base} AS deps
COPY requirements.txt /tmp/
RUN mkdir -p /opt/deps && for i in 1 2 3 4 5 6; do head -c 500000 /dev/urandom > /opt/deps/lib$i.so; done \\
    && sleep 1
RUN for i in 1 2 3 4; do head -c 250000 /dev/urandom > /opt/deps/plugin$i.so; done && sleep 0.5
FROM {base}
ENV APP_HOME=/app
WORKDIR /app
COPY --from=deps /opt/deps /opt/deps
COPY src/ /app/src/
RUN cat /app/src/*.py > /app/bundle.py && sleep 0.3
CMD ["sh", "-c", "wc -c /app/bundle.py"]
"""


def _base_image(registry: RegistryProcess, work: Path) -> str:
    """busybox + a 4 MB 'runtime' layer (incompressible files), pushed with skopeo."""
    rootfs = make_busybox_rootfs(work / "rootfs")
    runtime = layer_from_files({f"usr/lib/runtime/part{i}.bin": os.urandom(1 << 20) for i in range(4)})
    image = image_manifest([layer_from_dir(rootfs), runtime])
    layout = write_layout(work / "base-layout", image.manifest, [image.config, *image.layers])
    ref = f"{registry.host}/bench/base:latest"
    push_layout(layout, ref)
    return ref


def _context(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "requirements.txt").write_text("numpy==2.0\nrequests==2.32\n")
    for i in range(40):
        (root / "src" / f"mod{i:02}.py").write_text(f"def f{i}():\n    return {i}\n" * 50)
    return root


def _run(context: Path, base: str, state: Path, *, cache_from: tuple[str, ...] = (), cache_to: tuple[str, ...] = (),
         tags: tuple[str, ...] = ()) -> tuple[BuildResult, float]:
    request = BuildRequest(
        context_dir=context, dockerfile=DOCKERFILE.format(base=base), root=state, tags=tags, push=bool(tags),
        cache_from=tuple(parse_cache_from(c) for c in cache_from), cache_to=tuple(parse_cache_to(c) for c in cache_to),
    )
    started = time.monotonic()
    result = asyncio.run(build(request, PlainProgress(io.StringIO())))
    return result, time.monotonic() - started


def _figures(result: BuildResult, seconds: float) -> dict[str, Any]:
    t = result.transfer
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "cached": f"{result.cached_steps}/{len(result.steps)}",
        "down_layer_bytes": t.downloaded["layer"],
        "down_other_bytes": t.downloaded["manifest"] + t.downloaded["config"],
        "up_layer_bytes": t.uploaded["layer"],
        "up_other_bytes": t.uploaded["manifest"] + t.uploaded["config"],
        "requests": t.requests,
    }
    for summary in result.cache_exports:
        out["export_seconds"] = round(summary.seconds, 3)
        out["export"] = summary.line()
    return out


_PROCESS = """\
import sys, time
t0, c0 = time.perf_counter(), time.process_time()
from lamina.cli import main
import lamina.build.builder, lamina.build.cli, lamina.build.cache.setup
t1, c1 = time.perf_counter(), time.process_time()
rc = main(sys.argv[1:])
t2, c2 = time.perf_counter(), time.process_time()
print(f"TIMES {t1 - t0:.3f} {t2 - t1:.3f} {c1 - c0:.3f} {c2 - c1:.3f}", file=sys.stderr)
sys.exit(rc)
"""


def _cli_seconds(context: Path, base: str, state: Path, cache: str, tag: str, pycache: Path | None,
                 src: Path | None = None) -> dict[str, float]:
    """The warm build as CI runs it (a fresh process), split into interpreter start-up, imports and build.

    With ``pycache``, bytecode is written to and read from that private dir (an installed wheel has its
    .pyc files); without, the process honours the caller's PYTHONDONTWRITEBYTECODE (a source checkout).
    ``src`` (another revision's ``src/`` dir) goes first on PYTHONPATH.
    """
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    argv = ["build", "--progress", "plain", "--root", str(state), "--cache-from", cache, "-t", tag, "--push",
            str(context)]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _PROCESS, *argv], check=True, capture_output=True, text=True, env=env)
    total = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    imports, work, imports_cpu, work_cpu = (float(x) for x in proc.stderr.rsplit("TIMES ", 1)[1].split())
    # CPU seconds are steadier than wall-clock on a shared machine (others' load mostly adds waiting)
    return {"process_seconds": round(total, 3), "python_startup_seconds": round(total - imports - work, 3),
            "imports_seconds": round(imports, 3), "build_seconds": round(work, 3),
            "process_cpu_seconds": round(cpu, 3), "imports_cpu_seconds": round(imports_cpu, 3),
            "build_cpu_seconds": round(work_cpu, 3)}


def _cli_best(context: Path, base: str, work: Path, cache: str, tag: str, runs: int, bytecode: bool,
              compare: Path | None = None) -> dict[str, Any]:
    """``runs`` warm processes, each on a fresh state dir: the best and the median of each part (shared machine).

    With ``bytecode``, one untimed process first fills a private bytecode cache the timed ones read. With
    ``compare`` (another revision's ``src/``), its processes alternate with ours, so both see the same load.
    """
    variants: dict[str, Path | None] = {"this": None, **({"compare": compare} if compare else {})}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for i in range(-1 if bytecode else 0, runs):
        for name, src in variants.items():
            pycache = work / f"pycache-{name}" if bytecode else None
            sample = _cli_seconds(context, base, work / f"s-warm-cli-{name}-{i}", cache, tag, pycache, src)
            if i >= 0:  # -1: the untimed run that fills the bytecode cache
                samples[name].append(sample)
    out: dict[str, Any] = {}
    for name, runs_of in samples.items():
        fig: dict[str, Any] = {"runs": runs, "bytecode_cache": bytecode}
        for key in runs_of[0]:
            values = sorted(s[key] for s in runs_of)
            fig[key] = values[0]
            fig[f"{key}_median"] = values[len(values) // 2]
        out[name] = fig
    return out


_FLOOR = {
    "python -c pass": "pass",
    "import asyncio": "import asyncio",
    "import asyncio, aiohttp": "import asyncio, aiohttp",
    "lamina build --help": "from lamina.cli import main\ntry:\n    main(['build', '--help'])\n"
                           "except SystemExit:\n    pass",
    "lamina build's imports": "import lamina.build.cli, lamina.build.builder, lamina.build.cache.setup",
}


def _import_floor(work: Path, runs: int, compare: Path | None) -> dict[str, dict[str, float]]:
    """Fresh interpreters (with a bytecode cache), alternating: how much of the start-up is the floor
    (the interpreter, asyncio, aiohttp) and how much is lamina's own; best and median wall and CPU seconds."""
    cases = [(name, code, None) for name, code in _FLOOR.items()]
    if compare is not None:
        cases += [(f"{name} [{compare}]", code, compare) for name, code in _FLOOR.items() if "lamina" in name]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    for i in range(-1, runs):  # -1: fills the bytecode caches, untimed
        for name, code, src in cases:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(work / ("pycache-compare" if src else "pycache-this"))
            if src is not None:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
            wall = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i >= 0:
                samples[name].append((wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
    out: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        walls, cpus = sorted(v[0] for v in values), sorted(v[1] for v in values)
        out[name] = {"wall": round(walls[0], 3), "wall_median": round(walls[len(walls) // 2], 3),
                     "cpu": round(cpus[0], 3), "cpu_median": round(cpus[len(cpus) // 2], 3)}
    return out


def _buildah(context: Path, base: str, registry: RegistryProcess, work: Path) -> dict[str, Any]:
    """The same scenario with buildah's own registry cache (its format, not BuildKit's)."""
    if shutil.which("buildah") is None:
        return {"skipped": "buildah not installed"}
    cache = f"{registry.host}/bench/buildah-cache"
    out: dict[str, Any] = {}
    for name, change in (("cold", False), ("warm", False), ("change", True)):
        if change:
            (context / "src" / "mod00.py").write_text("def changed():\n    return 'buildah'\n")
        store = work / f"buildah-{name}"
        cmd = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs",
               "build", "--layers", "--runtime", "runc", "--network", "none",
               "--tls-verify=false", "--cache-to", cache, "--cache-from", cache,
               "-t", f"{registry.host}/bench/buildah:{name}", "-f", str(context / "Dockerfile"), str(context)]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {**out, "failed": f"{name}: buildah exited {proc.returncode}: {' | '.join(tail)}"}
        out[f"{name}_seconds"] = round(seconds, 3)
        out[f"{name}_cache_hits"] = proc.stdout.count("Using cache")
        shutil.rmtree(store, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", choices=("lamina", "distribution"), default="lamina")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--no-buildah", action="store_true", help="skip the buildah comparison")
    parser.add_argument("--process-runs", type=int, default=5, metavar="N",
                        help="time the warm build as a fresh process N times; report best and median (default 5)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="time the processes without .pyc files (a checkout under PYTHONDONTWRITEBYTECODE)")
    parser.add_argument("--compare-src", type=Path, metavar="DIR",
                        help="also time the warm process with DIR (another revision's src/) first on PYTHONPATH,"
                        " alternating with this checkout's")
    parser.add_argument("--import-floor", action="store_true",
                        help="only time fresh interpreters: bare, asyncio, aiohttp, lamina build's imports, --help")
    args = parser.parse_args()
    if args.import_floor:
        with tempfile.TemporaryDirectory(prefix="lamina-bench-floor-") as tmp:
            floor = _import_floor(Path(tmp), args.process_runs, args.compare_src)
        if args.json:
            print(json.dumps(floor, indent=2))
            return 0
        print(f"fresh interpreters, best of {args.process_runs} (median), wall and CPU seconds:")
        for name, fig in floor.items():
            print(f"  {name:60} wall {fig['wall']:.3f} ({fig['wall_median']:.3f})"
                  f"  cpu {fig['cpu']:.3f} ({fig['cpu_median']:.3f})")
        return 0
    report: dict[str, Any] = {"registry": args.registry}
    with tempfile.TemporaryDirectory(prefix="lamina-bench-cache-") as tmp:
        work = Path(tmp)
        registry = (start_lamina if args.registry == "lamina" else start_distribution)(work / "registry")
        try:
            base = _base_image(registry, work)
            context = _context(work / "context")
            host = registry.host
            max_ref, min_ref = f"{host}/bench/app:cache-max", f"{host}/bench/app:cache-min"
            result, seconds = _run(context, base, work / "s-cold", cache_to=(f"type=registry,ref={max_ref},mode=max",),
                                   tags=(f"{host}/bench/app:cold",))
            report["cold_max"] = _figures(result, seconds)
            result, seconds = _run(context, base, work / "s-cold-min", cache_to=(f"type=registry,ref={min_ref}",),
                                   tags=(f"{host}/bench/app:cold-min",))
            report["cold_min"] = _figures(result, seconds)
            result, seconds = _run(context, base, work / "s-warm", cache_from=(max_ref,),
                                   tags=(f"{host}/bench/app:warm",))
            report["warm"] = _figures(result, seconds)
            timed = _cli_best(context, base, work, max_ref, f"{host}/bench/app:cli", args.process_runs,
                              not args.no_bytecode_cache, args.compare_src)
            report["warm_cli"] = timed["this"]
            if "compare" in timed:
                report["warm_cli_compare"] = {"src": str(args.compare_src), **timed["compare"]}
            (context / "src" / "mod00.py").write_text("def changed():\n    return 1\n")
            result, seconds = _run(context, base, work / "s-change", cache_from=(max_ref,),
                                   tags=(f"{host}/bench/app:change",))
            report["one_file_change"] = _figures(result, seconds)
            (context / "src" / "mod00.py").write_text("def f0():\n    return 0\n" * 50)
            if not args.no_buildah:
                (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
                report["buildah"] = _buildah(context, base, registry, work)
        finally:
            registry.stop()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"registry: {report['registry']}")
    for name in ("cold_max", "cold_min", "warm", "one_file_change"):
        fig = report[name]
        print(f"{name:16} {fig['seconds']:7.2f}s  cached {fig['cached']:>5}  layers down {fig['down_layer_bytes']:>9} B"
              f"  up {fig['up_layer_bytes']:>9} B  manifests+configs down {fig['down_other_bytes']} B"
              f" up {fig['up_other_bytes']} B  {fig['requests']} requests")
        if "export" in fig:
            print(f"{'':16} {fig['export']}")
    for label, key in (("warm as a process", "warm_cli"), (f"  with {args.compare_src}", "warm_cli_compare")):
        if key in report:
            _print_cli(label, report[key])
    if "buildah" in report:
        print(f"buildah          {json.dumps(report['buildah'])}")
    return 0


def _print_cli(label: str, cli: dict[str, Any]) -> None:
    pyc = "with" if cli["bytecode_cache"] else "without"
    print(f"{label} ({pyc} .pyc), best of {cli['runs']} (median): {cli['process_seconds']:.2f}s"
          f" ({cli['process_seconds_median']:.2f}) = python start-up {cli['python_startup_seconds']:.2f}s"
          f" ({cli['python_startup_seconds_median']:.2f}) + imports {cli['imports_seconds']:.2f}s"
          f" ({cli['imports_seconds_median']:.2f}) + build {cli['build_seconds']:.2f}s"
          f" ({cli['build_seconds_median']:.2f})")
    print(f"{'':{len(label)}} CPU: process {cli['process_cpu_seconds']:.2f}s ({cli['process_cpu_seconds_median']:.2f})"
          f" = imports {cli['imports_cpu_seconds']:.2f}s ({cli['imports_cpu_seconds_median']:.2f})"
          f" + build {cli['build_cpu_seconds']:.2f}s ({cli['build_cpu_seconds_median']:.2f}) + the rest")


if __name__ == "__main__":
    sys.exit(main())

"""The CI scenarios of issue 10 on the public corpus (``bench/corpus/``): cold, warm, source change, dependency change.

Every build starts from an **empty local state** (a fresh ``--root``), finds its cache in a lamina registry on
loopback and pushes the image there, and is timed as the wall time of a fresh ``lamina build`` process, as a
CI job pays it. Per project (a copy of ``bench/corpus/NAME`` in a temporary directory):

- ``cold``: ``--cache-to type=registry,ref=.../NAME:cache,mode=max``, image pushed;
- ``warm``: ``--cache-from`` that cache, image pushed; must be fully cached and download no layer byte
  (counted from the registry's access log: bytes of blob GETs whose digest is a layer of the cache or of
  the base image). Timed ``--warm-runs`` times (best and median: the figure is short and the machine shared);
- ``source``: the project with ``NAME.source.patch`` applied, ``--cache-from``, image pushed;
- ``dependency``: the project with ``NAME.dependency.patch`` applied, ``--cache-from``, image pushed.

Lamina's cold export carries the contents of the RUN cache mounts (``docker-init-python``'s apt and pip
caches), which the changed builds' RUNs get back on their empty states; ``--no-cache-mounts`` exports
without them (``cache-mounts=false``), as a runner with BuildKit's local-only cache mounts starts.

The base image is Debian bookworm made with debootstrap (``bench/_debian.py``); RUN steps reach the public
package mirrors (deb.debian.org, PyPI, npm), so the changed and cold figures move with the mirrors' speed.
With ``buildah`` installed the same builds run with ``buildah build --layers --runtime runc
--cache-to/--cache-from`` (its own cache format, the same registry, fresh storage per build) followed by
``buildah push``. Each build's state dir (and buildah's storage) is removed at the end of the run, not between
builds: on ext4 without a journal (this kind of machine's ``/``), creating files within ~30 s of deleting many
is several times slower (the inode allocator skips recently freed inodes), a cost a fresh CI runner does not
pay and that would land on whichever build follows a big clean-up. For the same reason each build starts
after ``sync`` (untimed): the previous build's dirty pages (hundreds of MB after a cold build) are not
written back under the next one, which a fresh runner would not share its disk with. The table shows
lamina, buildah, BuildKit
v0.32.2's figures from issue 10 (measured on projects of the same kind, not on this corpus) and lamina /
BuildKit. Needs root, runc and the network.

    sudo .venv/bin/python bench/ci_scenarios.py [--projects python-web,c-multistage] [--no-buildah] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _debian import DEFAULT_ROOTFS, debian_rootfs, push_debian_base
from helpers.registries import RegistryProcess, start_lamina

CORPUS = Path(__file__).resolve().parent / "corpus"
PROJECTS = ("python-web", "node-api", "c-multistage", "docker-init-python")
CASES = ("cold", "warm", "source", "dependency")
# BuildKit v0.32.2 on this kind of machine, from issue 10 (seconds); None: not measured there.
BUILDKIT: dict[str, dict[str, float | None]] = {
    "python-web": {"cold": 19.6, "warm": 0.17, "source": 8.1, "dependency": 15.0},
    "node-api": {"cold": 46.6, "warm": 0.20, "source": 15.6, "dependency": 25.3},
    "c-multistage": {"cold": 17.3, "warm": 0.15, "source": 6.8, "dependency": 12.0},
    "docker-init-python": {"cold": None, "warm": None, "source": None, "dependency": 14.2},
}
_NEEDS_MOUNT = "RUN --mount is not supported"
_LAYER_TYPES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")


@dataclass
class Figure:
    """One case of one project for one builder."""

    seconds: float | None = None
    median: float | None = None  # with several runs (warm)
    runs: int = 0
    steps: int = 0
    cached: int = 0
    layer_bytes_down: int = 0
    blob_bytes_down: int = 0
    note: str = ""  # why there is no figure, or what the check found
    samples: list[float] = field(default_factory=list)


class AccessLog:
    """The registry's JSON access log (``access_log = true``), read from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size

    def blob_gets(self) -> dict[str, int]:
        """Bytes sent per blob digest by the GETs logged since the last call."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        sent: dict[str, int] = {}
        for line in data.splitlines():
            if not line.startswith(b"{"):
                continue
            entry = json.loads(line)
            path = entry.get("path", "")
            if entry.get("method") == "GET" and "/blobs/sha256:" in path and entry.get("status") in (200, 206):
                digest = path.rsplit("/", 1)[1]
                sent[digest] = sent.get(digest, 0) + int(entry.get("bytes_out", 0))
        return sent


def layer_digests(registry: RegistryProcess, repo: str, reference: str) -> set[str]:
    """Layer digests of an image or cache manifest (or of every manifest of an index), read over HTTP."""
    accept = ", ".join(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as resp:
        doc = json.load(resp)
    entries = [*doc.get("layers", []), *doc.get("manifests", [])]
    return {d["digest"] for d in entries if d.get("mediaType", "").startswith(_LAYER_TYPES)}


def _patched(project: Path, change: str | None, dest: Path) -> Path:
    """A copy of ``project`` with ``NAME.<change>.patch`` applied (``patch -p1``)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(project, dest, symlinks=True)
    if change is not None:
        patch = CORPUS / f"{project.name}.{change}.patch"
        subprocess.run(["patch", "-p1", "--quiet", "--forward", "-d", str(dest), "-i", str(patch)], check=True)
    return dest


def _steps(progress: str) -> tuple[int, int, list[str]]:
    """(steps, cached steps, the MISS lines) from ``--progress plain`` output: ``#N [stage i/n] ...`` then
    ``#N CACHED`` or ``#N MISS why`` (a ``FROM`` is resolved, never cached or missed)."""
    lines = [line for line in progress.splitlines() if line.startswith("#")]
    vertices = {line.split()[0] for line in lines if " [" in line and "] FROM " not in line}  # FROM: no record
    cached = {line.split()[0] for line in lines if " CACHED" in line}
    return len(vertices), len(cached & vertices), [line for line in lines if " MISS " in line]


def _keep_log(logs: Path | None, name: str, text: str) -> None:
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{name}.log").write_text(text)


class Lamina:
    """``lamina build`` as fresh processes of this checkout, each on a new state dir under ``work``."""

    name = "lamina"

    def __init__(self, work: Path, registry: RegistryProcess, base: str, logs: Path | None,
                 cache_mounts: bool = True) -> None:
        self.work, self.registry, self.base, self.logs = work, registry, base, logs
        self.cache_mounts = cache_mounts  # False: the cold export leaves RUN cache mounts out (cache-mounts=false)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")  # an installed wheel has its .pyc files
        self.count = 0

    def build(self, project: str, context: Path, case: str, log: AccessLog) -> Figure:
        host = self.registry.host
        cache = f"{host}/corpus/{project}:cache"
        args = ["--build-arg", f"BASE={self.base}", "-t", f"{host}/corpus/{project}:{case}", "--push"]
        export = f"type=registry,ref={cache},mode=max" + ("" if self.cache_mounts else ",cache-mounts=false")
        args += ["--cache-to", export] if case == "cold" else ["--cache-from", cache]
        self.count += 1
        state = self.work / f"state-{self.count}"
        argv = [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(state), *args,
                str(context)]
        log.skip()
        os.sync()  # the previous build's dirty pages written back first: a fresh runner has none
        started = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        _keep_log(self.logs, f"lamina-{project}-{case}-{self.count}", proc.stderr)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            note = "needs RUN --mount" if _NEEDS_MOUNT in proc.stderr else f"failed: {tail[0][:160]}"
            return Figure(note=note)
        sent = log.blob_gets()
        layers = layer_digests(self.registry, f"corpus/{project}", "cache") | self.base_layers()
        steps, cached, misses = _steps(proc.stderr)
        return Figure(round(seconds, 3), runs=1, steps=steps, cached=cached, samples=[round(seconds, 3)],
                      note="; ".join(misses)[:200],
                      layer_bytes_down=sum(n for d, n in sent.items() if d in layers),
                      blob_bytes_down=sum(sent.values()))

    def base_layers(self) -> set[str]:
        repo, _, tag = self.base.split("/", 1)[1].rpartition(":")
        return layer_digests(self.registry, repo, tag)


class Buildah:
    """``buildah build --layers`` with its registry cache, then ``buildah push``; fresh storage per build."""

    name = "buildah"

    def __init__(self, work: Path, registry: RegistryProcess, base: str, driver: str, logs: Path | None) -> None:
        self.work, self.registry, self.base, self.driver, self.logs = work, registry, base, driver, logs
        self.count = 0

    def build(self, project: str, context: Path, case: str, log: AccessLog) -> Figure:
        host = self.registry.host
        cache, image = f"{host}/buildah/{project}/cache", f"{host}/buildah/{project}:{case}"
        self.count += 1
        store = self.work / f"buildah-{self.count}"
        common = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
                  "--storage-driver", self.driver]
        build = [*common, "build", "--layers", "--runtime", "runc", "--network", "host", "--tls-verify=false",
                 "--cache-to", cache, "--cache-from", cache, "--build-arg", f"BASE={self.base}", "-t", image,
                 str(context)]
        push = [*common, "push", "--tls-verify=false", image]
        log.skip()
        os.sync()  # the previous build's dirty pages written back first: a fresh runner has none
        started = time.perf_counter()
        proc = subprocess.run(build, capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode == 0:
            pushed = subprocess.run(push, capture_output=True, text=True, check=False, timeout=600)
            proc = subprocess.CompletedProcess(build, pushed.returncode, proc.stdout, proc.stderr + pushed.stderr)
        seconds = time.perf_counter() - started
        _keep_log(self.logs, f"buildah-{project}-{case}-{self.count}", proc.stdout + proc.stderr)
        subprocess.run([*common, "rm", "--all"], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(store / "root")], capture_output=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return Figure(note=f"failed: {tail[0][:160]}")
        sent = log.blob_gets()
        steps = sum(1 for line in proc.stdout.splitlines() if line.startswith("STEP "))
        return Figure(round(seconds, 3), runs=1, steps=steps, cached=proc.stdout.count("Using cache"),
                      samples=[round(seconds, 3)], blob_bytes_down=sum(sent.values()))


def _run_project(builder: Lamina | Buildah, project: str, work: Path, log: AccessLog,
                 warm_runs: int) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    contexts = {"cold": None, "warm": None, "source": "source", "dependency": "dependency"}
    for case, change in contexts.items():
        context = _patched(CORPUS / project, change, work / f"ctx-{builder.name}-{project}-{case}")
        if case != "cold" and out["cold"].seconds is None:
            out[case] = Figure(note="no cold build to start from")
            continue
        runs = warm_runs if case == "warm" else 1
        figures = [builder.build(project, context, case, log) for _ in range(runs)]
        fig = figures[0]
        if fig.seconds is not None and len(figures) > 1:
            samples = sorted(f.seconds for f in figures if f.seconds is not None)
            fig.samples, fig.seconds, fig.median, fig.runs = samples, samples[0], statistics.median(samples), len(
                samples)
            fig.layer_bytes_down = max(f.layer_bytes_down for f in figures)
            fig.cached = min(f.cached for f in figures)
        if case == "warm" and fig.seconds is not None and builder.name == "lamina":
            full = fig.cached == fig.steps and fig.steps > 0
            fig.note = ("fully cached" if full else f"NOT fully cached ({fig.cached}/{fig.steps}: {fig.note})") + (
                ", no layer byte down" if fig.layer_bytes_down == 0 else f", {fig.layer_bytes_down} layer bytes DOWN")
        out[case] = fig
        print(f"  {builder.name:8} {project:20} {case:11} "
              f"{'-' if fig.seconds is None else f'{fig.seconds:7.2f} s'}  {fig.note}", file=sys.stderr, flush=True)
    return out


def _cell(fig: Figure | None) -> str:
    if fig is None:
        return "-"
    if fig.seconds is None:
        return fig.note
    return f"{fig.seconds:.2f} s" + (f" (median {fig.median:.2f})" if fig.median is not None else "")


def table(results: dict[str, dict[str, dict[str, Figure]]]) -> str:
    """The issue's table: per project and case, lamina, buildah, BuildKit (issue 10) and lamina / BuildKit."""
    lines = ["| project | case | lamina | buildah | BuildKit (issue 10) | lamina / BuildKit | check |",
             "|---|---|---|---|---|---|---|"]
    for project, builders in results.items():
        for case in CASES:
            ours = builders.get("lamina", {}).get(case)
            theirs = builders.get("buildah", {}).get(case)
            ref = BUILDKIT.get(project, {}).get(case)
            ratio = "-" if ours is None or ours.seconds is None or ref is None else f"{ours.seconds / ref:.2f}x"
            check = ours.note if case == "warm" and ours is not None and ours.seconds is not None else ""
            lines.append(f"| {project} | {case} | {_cell(ours)} | {_cell(theirs)} | "
                         f"{'-' if ref is None else f'{ref:.2f} s'} | {ratio} | {check} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", default=",".join(PROJECTS), help="comma-separated corpus projects")
    parser.add_argument("--warm-runs", type=int, default=5, help="times the warm build is timed (best, median)")
    parser.add_argument("--no-buildah", action="store_true", help="skip the buildah comparison")
    parser.add_argument("--buildah-driver", default="overlay", help="buildah's storage driver (overlay or vfs)")
    parser.add_argument("--no-cache-mounts", action="store_true",
                        help="lamina's cold export without its RUN cache mounts (cache-mounts=false): what the "
                             "source and dependency builds cost when a fresh runner's cache mounts start empty")
    parser.add_argument("--rootfs", type=Path, default=DEFAULT_ROOTFS, help="where the debootstrap tree is kept")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON after the table")
    parser.add_argument("--logs", type=Path, help="keep every build's output in this directory")
    args = parser.parse_args()
    projects = [p for p in args.projects.split(",") if p]
    unknown = [p for p in projects if not (CORPUS / p).is_dir()]
    if unknown:
        parser.error(f"unknown project(s) {', '.join(unknown)}: expected some of {', '.join(PROJECTS)}")
    rootfs = debian_rootfs(args.rootfs)
    results: dict[str, dict[str, dict[str, Figure]]] = {}
    with tempfile.TemporaryDirectory(prefix="lamina-ci-scenarios-") as tmp:
        work = Path(tmp)
        registry = start_lamina(work / "registry", config="access_log = true\n")
        try:
            base = push_debian_base(rootfs, registry.host, work)
            log = AccessLog(registry.log_path)
            builders: list[Lamina | Buildah] = [Lamina(work, registry, base, args.logs, not args.no_cache_mounts)]
            if not args.no_buildah and shutil.which("buildah"):
                builders.append(Buildah(work, registry, base, args.buildah_driver, args.logs))
            for project in projects:
                for builder in builders:
                    results.setdefault(project, {})[builder.name] = _run_project(
                        builder, project, work, log, args.warm_runs if builder.name == "lamina" else 1)
        finally:
            registry.stop()
    print(table(results))
    if args.json:
        print(json.dumps({p: {b: {c: asdict(f) for c, f in cases.items()} for b, cases in by.items()}
                          for p, by in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

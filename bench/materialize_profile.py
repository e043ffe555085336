"""Where the seconds of materialising a parent chain go: download, gunzip, tar parsing, file creation, diffID.

A changed build's first missed step (``COPY . .`` after the apt and pip layers) first needs its parent
chain unpacked into the layer store (``StepExecutor.materialize``: each blob streamed from the registry
into ``LayerStore.unpack_async``, which gunzips, parses the tar, creates the files in overlay format and
checks the diffID). This script pushes such a chain to a lamina registry on loopback (or takes one
already pushed: ``--registry HOST --layers DIGEST:DIFFID,...``) and measures, per layer and in total:

- ``download``: the blob's bytes through lamina's registry client (digest-checked), nothing else;
- ``gunzip``: ISA-L decompression of the local blob into memory-sized chunks;
- ``sha256``: hashing the uncompressed tar (the diffID);
- ``tar parse``: lamina's tar reader over the decoded chunks, file data skipped;
- ``extract``: ``extract_layer`` from the local blob (decode, hash, parse, create files), with cProfile of
  the unpacking thread's Python-level work summed by syscall (open, write, fchown, utime, setxattr, ...);
- ``materialize``: the real path, all layers gathered as ``StepExecutor.materialize`` does, from the
  registry into a fresh layer store (the figure a changed build waits for).

The default chain stands in for ``bench/corpus/python-web``'s parents: the debootstrap bookworm tree
(``bench/_debian.py``'s), the host's ``/usr/lib/python3.11`` (the apt layer's bulk) and a Python
site-packages tree (the pip layer: pip's own package); ``--trees`` names others. Scratch data ~1.5 GB,
removed at the end. Needs root (layers keep owners).

    sudo .venv/bin/python bench/materialize_profile.py [--trees DIR,DIR] [--runs 3] [--top 12]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.registries import start_lamina
from lamina.build.cache.base import LayerRef
from lamina.build.contentstore import ContentStore
from lamina.build.images import RegistryImages
from lamina.build.worker.compression import open_layer
from lamina.build.worker.extract import extract_layer
from lamina.build.worker.layerstore import LayerStore
from lamina.build.worker.tarread import TarReader
from lamina.build.worker.tarwrite import write_layer
from lamina.client.client import ClientPool
from lamina.oci import Descriptor, mediatypes

REPO = "bench/materialize"
_MIB = 1 << 20
_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
DEFAULT_TREES = (Path("/var/tmp/lamina-bench-bookworm"), Path("/usr/lib/python3.11"), _SITE / "pip")
# cProfile rows summed under these names: the syscalls of file creation and the tar/hash work around them.
_SYSCALLS = ("open", "write", "close", "mkdir", "symlink", "fchown", "fchmod", "lchown", "chmod", "utime",
             "setxattr", "link", "mknod", "lstat", "rename", "fsync", "syncfs")


@dataclass
class Layer:
    tree: str
    ref: LayerRef
    path: Path  # the local blob
    tar_size: int
    entries: int


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def make_layers(trees: list[Path], work: Path, source: str) -> list[Layer]:
    """Each tree written as one gzip layer with lamina's layer writer (as a RUN's upper dir would be)."""
    layers = []
    for tree in trees:
        if not tree.is_dir():
            raise SystemExit(f"--trees: {tree} is not a directory; name existing trees (comma-separated)")
        staged = work / "stage" / tree.name
        target = staged / tree.relative_to("/").as_posix()
        target.parent.mkdir(parents=True, exist_ok=True)
        # cp -a, never shutil.copytree: a debootstrap tree holds dev/zero and dev/urandom, which copytree
        # opens and reads forever (it filled the disk at 12:25; the lead's watchdog then killed this script)
        subprocess.run(["cp", "-a", str(tree), str(target)], check=True)
        for special in ("dev", "proc", "sys"):  # kept empty, as bench/_debian.py's base image has them
            if (target / special).is_dir() and not (target / special).is_symlink():
                shutil.rmtree(target / special)
                (target / special).mkdir()
        blob = write_layer(staged, work / "blobs", compression="gzip")
        shutil.rmtree(staged)
        ref = LayerRef(Descriptor(blob.media_type, blob.digest, blob.size), blob.diff_id, None, source)
        tar_size, entries = _tar_stats(blob.path)
        layers.append(Layer(str(tree), ref, blob.path, tar_size, entries))
    return layers


def _tar_stats(path: Path) -> tuple[int, int]:
    size = entries = 0

    def chunks() -> Any:
        nonlocal size
        with open_layer(path, mediatypes.OCI_LAYER_GZIP) as fh:
            while chunk := fh.read(_MIB):
                size += len(chunk)
                yield chunk

    for _ in TarReader(chunks()):
        entries += 1
    return size, entries


async def push(pool: ClientPool, host: str, layers: list[Layer]) -> None:
    client = pool.get(host)
    await asyncio.gather(*(client.push_blob(REPO, x.ref.descriptor.digest, x.ref.descriptor.size, x.path)
                           for x in layers))


async def download(pool: ClientPool, host: str, layer: Layer) -> float:
    start = time.perf_counter()
    async for _chunk in pool.get(host).get_blob(REPO, layer.ref.descriptor.digest, size=layer.ref.descriptor.size):
        pass
    return time.perf_counter() - start


def gunzip(layer: Layer) -> float:
    def run() -> None:
        with open_layer(layer.path, mediatypes.OCI_LAYER_GZIP) as fh:
            while fh.read(_MIB):
                pass
    return _timed(run)[0]


def decoded(layer: Layer) -> list[bytes]:
    with open_layer(layer.path, mediatypes.OCI_LAYER_GZIP) as fh:
        return list(iter(lambda: fh.read(_MIB), b""))


def sha256(chunks: list[bytes]) -> float:
    def run() -> None:
        hasher = hashlib.sha256()
        for chunk in chunks:
            hasher.update(chunk)
    return _timed(run)[0]


def parse(chunks: list[bytes]) -> float:
    def run() -> None:
        for _ in TarReader(iter(chunks)):
            pass
    return _timed(run)[0]


def extract(layer: Layer, dest: Path, profile: cProfile.Profile | None) -> float:
    """``extract_layer`` from the local blob; ``profile`` records the calling (unpacking) thread only."""
    def run() -> None:
        extract_layer(layer.path, layer.ref.descriptor.media_type, dest, expected_diff_id=layer.ref.diff_id)
    if profile is None:
        return _timed(run)[0]
    profile.enable()
    try:
        return _timed(run)[0]
    finally:
        profile.disable()


async def materialize(pool: ClientPool, root: Path, layers: list[Layer]) -> tuple[float, float]:
    """The path a changed build takes (StepExecutor._unpack): stream each blob into the layer store, gathered.

    Returns wall seconds and the CPU seconds (user + system, all threads) this process spent meanwhile."""
    images = RegistryImages(pool, ContentStore(root / "content"))
    store = LayerStore(root)

    async def one(layer: Layer) -> Path:
        return await store.unpack_async(images.stream(layer.ref), layer.ref.descriptor.media_type, layer.ref.diff_id)

    cpu, start = _cpu(), time.perf_counter()
    await asyncio.gather(*(one(x) for x in layers))
    return time.perf_counter() - start, _cpu() - cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def syscall_table(profile: cProfile.Profile, top: int) -> list[str]:
    stats = pstats.Stats(profile)
    sums: dict[str, list[float]] = {}
    rows = []
    for (filename, _line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = name.strip("<>").removeprefix("built-in method ").removeprefix("posix.")
        if filename == "~" and label in _SYSCALLS:
            entry = sums.setdefault(label, [0, 0.0])
            entry[0] += calls
            entry[1] += tottime
        rows.append((tottime, calls, cumtime, f"{Path(filename).name}:{name}" if filename != "~" else name))
    lines = ["syscalls (os.*) in the unpacking thread, summed over layers:", "  call          calls   seconds"]
    for label, (calls, seconds) in sorted(sums.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {label:<12} {int(calls):>7} {seconds:>9.3f}")
    lines.append(f"top {top} functions by own time (the unpacking thread):")
    lines.append("  own s   calls   cum s  function")
    for tottime, calls, cumtime, label in sorted(rows, reverse=True)[:top]:
        lines.append(f"  {tottime:6.3f} {calls:>7} {cumtime:7.3f}  {label}")
    return lines


def _note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _pick(values: list[float]) -> str:
    return f"{min(values):6.2f}" if len(values) == 1 else f"{min(values):6.2f} ({statistics.median(values):.2f})"


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="materialize-profile-", dir=args.workdir))
    registry = None
    try:
        registry = start_lamina(work / "registry")
        host = registry.host
        pool = ClientPool(insecure=frozenset({host}))
        trees = [Path(t).resolve() for t in args.trees.split(",")] if args.trees else list(DEFAULT_TREES)
        if any(work.is_relative_to(tree) for tree in trees):
            raise SystemExit(f"--workdir {args.workdir} is inside a --trees directory: the copy would copy itself")
        layers = make_layers(trees, work, f"{host}/{REPO}")
        _note(f"{len(layers)} layers written")
        await push(pool, host, layers)
        profile = cProfile.Profile()
        per_layer: list[dict[str, list[float]]] = [{} for _ in layers]
        totals: list[float] = []
        cpus: list[float] = []
        for attempt in range(args.runs):
            for i, layer in enumerate(layers):
                figures = per_layer[i]
                figures.setdefault("download", []).append(await download(pool, host, layer))
                figures.setdefault("gunzip", []).append(gunzip(layer))
                chunks = decoded(layer)
                figures.setdefault("sha256", []).append(sha256(chunks))
                figures.setdefault("tar parse", []).append(parse(chunks))
                del chunks
                dest = LayerStore(work / "extract").path(layer.ref.diff_id)  # placed as the store places it
                figures.setdefault("extract", []).append(
                    await asyncio.to_thread(extract, layer, dest, profile if attempt == 0 else None))
                shutil.rmtree(dest)
            _note(f"run {attempt + 1}: stages measured")
            root = work / f"state-{attempt}"
            wall, cpu = await materialize(pool, root, layers)
            totals.append(wall)
            cpus.append(cpu)
            shutil.rmtree(root)
        await pool.close()
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average {load}; {args.runs} run(s): best (median), seconds")
        header = ["download", "gunzip", "sha256", "tar parse", "extract"]
        print(f"{'layer':<34} {'blob MiB':>8} {'tar MiB':>8} {'entries':>7} " + " ".join(f"{h:>13}" for h in header))
        for layer, figures in zip(layers, per_layer, strict=True):
            print(f"{layer.tree[-34:]:<34} {layer.ref.descriptor.size / _MIB:8.1f} {layer.tar_size / _MIB:8.1f} "
                  f"{layer.entries:>7} " + " ".join(f"{_pick(figures[h]):>13}" for h in header))
        sums = {h: sum(min(f[h]) for f in per_layer) for h in header}
        print(f"{'sum of layers':<34} {sum(x.ref.descriptor.size for x in layers) / _MIB:8.1f} "
              f"{sum(x.tar_size for x in layers) / _MIB:8.1f} {sum(x.entries for x in layers):>7} "
              + " ".join(f"{sums[h]:13.2f}" for h in header))
        print(f"materialize (all layers gathered, registry -> layer store): {_pick(totals)} s wall, "
              f"{_pick(cpus)} s CPU of this process (2 cores: the wall clock cannot go below CPU / 2)")
        print("\n".join(syscall_table(profile, args.top)))
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", help="comma-separated directories, one layer each (default: python-web-like)")
    parser.add_argument("--runs", type=int, default=3, help="times every figure is measured (best, median)")
    parser.add_argument("--top", type=int, default=15, help="rows of the cProfile table")
    parser.add_argument("--workdir", default=None,
                        help="where the scratch data (~1.5 GB) goes; never a parent of a --trees directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("materialize_profile.py needs root: layers keep their files' owners")
    threading.current_thread().name = "main"
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

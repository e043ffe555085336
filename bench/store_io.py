"""Storage micro-benchmarks behind two defaults in ``lamina.store``; prints figures and ratios.

1. Upload writes inline in 1 MiB or 256 KiB units vs. in a worker thread
   (``FilesystemUploadStore(write_in_thread=..., write_buffer=...)``) for 1 MiB and 256 MiB blobs,
   streamed in 64 KiB chunks as aiohttp delivers them: wall and CPU time of append + commit, and the
   longest event-loop stall seen by a 1 ms ticker (what other requests on that worker would feel).
2. SQLite ``synchronous`` FULL vs NORMAL: manifest PUTs (one transaction each) per second, and manifest GET
   by tag (the hot read path) per second.

Usage: ``.venv/bin/python bench/store_io.py [--big-mib 256] [--puts 300] [--repeats 5]``. Runs in a temp
dir under /var/tmp. Wall times and stalls are only comparable within one run (other load shifts both
modes alike, as runs are interleaved); CPU seconds include the worker threads.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from lamina.oci import Digest
from lamina.store import ManifestRecord, ManifestReference, open_storage

CHUNK = 64 << 10


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start : start + CHUNK])
        await asyncio.sleep(0)  # a network stream yields to the loop between reads


async def _upload(
    root: Path, data: bytes, digest: Digest, in_thread: bool, write_buffer: int
) -> tuple[float, float, float]:
    storage = open_storage(root)
    storage.uploads.write_in_thread = in_thread
    storage.uploads.write_buffer = write_buffer
    session = f"s{time.monotonic_ns()}"
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    start, cpu = time.perf_counter(), time.process_time()
    storage.uploads.create(session)
    await storage.uploads.append(session, 0, _chunks(data))
    await storage.uploads.commit(session, digest)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    done = True
    await tick
    storage.blobs.delete(digest)
    storage.close()
    return elapsed, worst, cpu


def bench_uploads(root: Path, big_mib: int, repeats: int) -> None:
    print("upload append+commit (64 KiB chunks), median of runs   wall s    CPU s   worst loop stall ms")
    modes = {  # label: (write_in_thread, write_buffer)
        "inline-1M": (False, 1 << 20),
        "inline-256K": (False, 256 << 10),
        "thread-1M": (True, 1 << 20),
    }
    for mib in (1, big_mib):
        data = os.urandom(mib << 20)
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in modes}
        for _ in range(repeats):  # interleaved, so background load hits every mode alike
            for label, (in_thread, write_buffer) in modes.items():
                runs[label].append(asyncio.run(_upload(root, data, digest, in_thread, write_buffer)))
        for label in modes:
            wall = statistics.median(r[0] for r in runs[label])
            stall = statistics.median(r[1] for r in runs[label])
            cpu = statistics.median(r[2] for r in runs[label])
            print(f"  {mib:4d} MiB {label:12s}{'':30s}{wall:8.4f} {cpu:8.4f}   {stall * 1000:10.2f}")
        base = statistics.median(r[2] for r in runs["inline-1M"])
        for label in modes:
            ratio = statistics.median(r[2] for r in runs[label]) / base
            print(f"  {mib:4d} MiB {label} / inline-1M CPU ratio: {ratio:.2f}")


def bench_sqlite(root: Path, puts: int) -> None:
    print("sqlite metadata                            PUT/s      GET-by-tag/s")
    rates = {}
    for mode in ("FULL", "NORMAL"):
        base = root / mode
        storage = open_storage(base, synchronous=mode)
        meta = storage.metadata
        layer = Digest("sha256", hashlib.sha256(b"layer").hexdigest())
        meta.link_blob("bench/app", layer, 5)
        start = time.perf_counter()
        for i in range(puts):
            content = f'{{"n":{i}}}'.encode()
            record = ManifestRecord(
                "bench/app",
                Digest("sha256", hashlib.sha256(content).hexdigest()),
                "application/vnd.oci.image.manifest.v1+json",
                content,
                "image",
                None,
                None,
                None,
                time.time(),
                None,
            )
            meta.put_manifest(record, [ManifestReference(layer, 5)], f"t{i}")
        put_rate = puts / (time.perf_counter() - start)
        gets = puts * 5
        start = time.perf_counter()
        for i in range(gets):
            assert meta.get_manifest("bench/app", f"t{i % puts}") is not None
        get_rate = gets / (time.perf_counter() - start)
        rates[mode] = put_rate
        print(f"  synchronous={mode:7s}                 {put_rate:9.0f}   {get_rate:12.0f}")
        storage.close()
    print(f"  NORMAL/FULL PUT ratio: {rates['NORMAL'] / rates['FULL']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-bench-store-", dir="/var/tmp") as tmp:
        bench_uploads(Path(tmp) / "uploads", args.big_mib, args.repeats)
        bench_sqlite(Path(tmp) / "sqlite", args.puts)


if __name__ == "__main__":
    main()

"""Registry scale-out benchmark: one vs two replicas on the same PostgreSQL + S3 (Ceph RGW), and what
PostgreSQL + S3 cost against the embedded backends (SQLite + files), on the same workload.

Workload, per setup and repeat (a fresh repository each time): ``--blobs`` random blobs of ``--size``
bytes pushed monolithically (``POST ...?digest=``, one request each) by ``--concurrency`` clients at once,
then pulled back (``GET``, streamed through the registry: ``redirect=false``, so the replicas carry the
bytes, not the gateway), then ``--blobs`` 4 KiB blobs pushed the same way (the metadata-bound rate:
each push is a session, an S3 object and a link transaction). With two replicas, clients alternate
between them, as a round-robin load balancer would send them. Each replica is one worker process.

Setups: ``embedded`` (one replica, SQLite + files under a root in /var/tmp), ``shared x1`` and
``shared x2`` (PostgreSQL from scripts/services/postgres.sh, with fsync, and a memstore Ceph RGW from
scripts/services/ceph-rgw.sh, both on loopback). Everything runs on this machine, so two replicas
compete for the same cores with each other, the database and the gateway: the figure says what a
second process buys here, not on separate hosts. Medians of ``--repeats``.

Usage: ``.venv/bin/python bench/scaleout.py [--blobs 64] [--size-mib 1] [--concurrency 16] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.registries import RegistryProcess, start_lamina

MiB = 1 << 20


def _blobs(count: int, size: int) -> list[tuple[str, bytes]]:
    blobs = []
    for _ in range(count):
        data = os.urandom(size)
        blobs.append(("sha256:" + hashlib.sha256(data).hexdigest(), data))
    return blobs


async def _run_all(urls: list[str], jobs: list[tuple[str, str, bytes]], method: str, concurrency: int) -> float:
    """Send every job (repository, digest, data), ``concurrency`` at a time, alternating between
    ``urls``; the seconds it took. Any answer but the expected one aborts the run."""
    queue = list(enumerate(jobs))
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def worker() -> None:
            while queue:
                index, (repository, digest, data) = queue.pop()
                base = urls[index % len(urls)]
                if method == "push":
                    async with session.post(f"{base}/v2/{repository}/blobs/uploads/", params={"digest": digest},
                                            data=data, headers={"Content-Type": "application/octet-stream"}) as r:
                        if r.status != 201:
                            raise RuntimeError(f"push {digest}: {r.status} {await r.text()}")
                else:
                    async with session.get(f"{base}/v2/{repository}/blobs/{digest}") as r:
                        got = await r.read()
                        if r.status != 200 or len(got) != len(data):
                            raise RuntimeError(f"pull {digest}: {r.status}, {len(got)} bytes")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def _cpu_seconds(replicas: list[RegistryProcess]) -> float:
    """User + system CPU the replicas' processes have used so far (/proc/PID/stat; one worker each)."""
    total = 0
    for replica in replicas:
        assert replica.process is not None
        fields = Path(f"/proc/{replica.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return total / os.sysconf("SC_CLK_TCK")


def _measure(replicas: list[RegistryProcess], args: argparse.Namespace) -> dict[str, float]:
    """Throughput of each phase, and the replicas' CPU milliseconds per request (steadier than wall time
    on a loaded machine: what a request costs the registry process, whatever else runs)."""
    urls = [replica.url for replica in replicas]
    repository = f"bench/{uuid.uuid4().hex[:8]}"
    big = [(repository, d, data) for d, data in _blobs(args.blobs, args.size_mib * MiB)]
    small = [(repository, d, data) for d, data in _blobs(args.blobs, 4096)]
    volume = args.blobs * args.size_mib * MiB / 1e6
    figures: dict[str, float] = {}
    for phase, jobs, method in (("push", big, "push"), ("pull", big, "pull"), ("4 KiB push", small, "push")):
        cpu = _cpu_seconds(replicas)
        seconds = asyncio.run(_run_all(urls, jobs, method, args.concurrency))
        figures[f"{phase} CPU ms"] = (_cpu_seconds(replicas) - cpu) * 1000 / len(jobs)
        figures[f"{phase} /s"] = len(jobs) / seconds
        if phase != "4 KiB push":
            figures[f"{phase} MB/s"] = volume / seconds
    return figures


@contextmanager
def _shared_services(stack: ExitStack) -> Iterator[tuple[str, str]]:
    """A PostgreSQL server and a Ceph RGW for the run: (metadata URL, blobs URL without a prefix)."""
    from helpers.ceph import BUCKET, start_ceph_rgw
    from helpers.postgres import scratch_database, start_postgres

    postgres = start_postgres(fast=False)
    stack.callback(postgres.stop)
    rgw = start_ceph_rgw()
    stack.callback(rgw.stop)
    os.environ.update(rgw.env)  # the AWS chain of every replica started from here
    metadata = stack.enter_context(scratch_database(postgres.url))
    yield metadata, f"s3://{BUCKET}/bench?endpoint={rgw.endpoint}&region=default&redirect=false"


def _start(workdir: Path, count: int, config: str) -> list[RegistryProcess]:
    return [start_lamina(workdir / f"replica-{n}", config=config) for n in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blobs", type=int, default=64)
    parser.add_argument("--size-mib", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="lamina-scaleout-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        embedded = _start(work / "embedded", 1, "workers = 1\n")
        metadata, blobs = stack.enter_context(_shared_services(stack))
        shared = _start(work / "shared", 2, f'workers = 1\nmetadata = "{metadata}"\nblobs = "{blobs}"\n')
        try:
            for _ in range(args.repeats):  # interleaved: drift on a busy machine hits every setup alike
                for name, replicas in (("embedded x1", embedded), ("shared x1", shared[:1]), ("shared x2", shared)):
                    results.setdefault(name, []).append(_measure(replicas, args))
        finally:
            for replica in (*embedded, *shared):
                replica.stop()
    print(f"{args.blobs} blobs of {args.size_mib} MiB and {args.blobs} of 4 KiB, {args.concurrency} clients, "
          f"median of {args.repeats}")
    keys = ["push MB/s", "pull MB/s", "4 KiB push /s", "push CPU ms", "pull CPU ms", "4 KiB push CPU ms"]
    print(f"{'setup':<12}" + "".join(f"{key:>18}" for key in keys))
    for name, runs in results.items():
        print(f"{name:<12}" + "".join(f"{statistics.median(r[key] for r in runs):>18.1f}" for key in keys))
    print("CPU ms: the replicas' CPU per request (summed over replicas); the database's and the gateway's not in it")
    return 0


if __name__ == "__main__":
    sys.exit(main())

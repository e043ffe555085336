#!/usr/bin/env python3
"""Registry benchmark: blob push/pull throughput and manifest/tag request rates, lamina vs a peer.

``bench/registry.py URL [URL...]`` measures the registries at those URLs; with no URL it starts lamina
and CNCF distribution (``docker-registry``) itself on free loopback ports with temporary roots, one after
the other, runs the same workload against each and prints the lamina/distribution ratio per figure
(> 1.0: lamina is faster). With URLs the ratio is first/second.

Workload, each at 1 and 32 concurrent clients: blob push of 1, 16 and 256 MiB, monolithic (POST, then
one PUT ?digest= with the body) and chunked (POST, PATCH 8 MiB chunks with Content-Range, PUT ?digest=);
blob pull (GET, body read and discarded); manifest PUT by tag, manifest GET by tag, tags list. Every
blob is unique (a random buffer with a per-operation suffix), so no registry can skip work.

Clients are aiohttp (uvloop) coroutines in separate client processes (``--client-procs``, default 2 at
32 clients) so one Python process is not the bottleneck; they share the 2 cores with the server, which
is why the CPU seconds used by the server and by the clients are reported next to each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from _peers import RegistryProcess, group_cpu_seconds, start_distribution, start_lamina
from _report import Result, report

MiB = 1 << 20
CHUNK = 8 * MiB
WRITE_SLICE = 1 * MiB
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TAG_COUNT = 100
MAX_BLOBS = 256  # per blob figure, at least one per client: small blobs measure latency, not volume
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a bound even if the clock misbehaves

# Filled in the parent before client processes fork, so every process shares them copy-on-write.
_BASE: dict[int, bytes] = {}
_BASE_HASH: dict[int, Any] = {}


@dataclass(frozen=True)
class Phase:
    kind: str  # push | push-chunked | pull | manifest-put | manifest-get | tags-list
    clients: int
    size: int = 0  # blob phases: bytes per blob
    ops_per_client: int = 0  # blob phases
    duration: float = 0.0  # request-rate phases: seconds

    @property
    def figure(self) -> str:
        return f"{self.kind} {self.size // MiB} MiB" if self.size else self.kind

    @property
    def unit(self) -> str:
        return "MB/s" if self.size else "req/s"


class SlicedPayload(Payload):
    """A request body made of byte views, sent with a Content-Length and without copying 256 MiB."""

    def __init__(self, parts: list[memoryview]) -> None:
        super().__init__(parts, content_type="application/octet-stream")
        self._size = sum(p.nbytes for p in parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("binary payload")

    async def write(self, writer: AbstractStreamWriter) -> None:
        for part in self._value:
            for offset in range(0, part.nbytes, WRITE_SLICE):
                await writer.write(part[offset : offset + WRITE_SLICE])


def blob_parts(size: int, tag: str) -> tuple[list[memoryview], str]:
    """A unique blob: the shared random buffer of ``size`` bytes, then a 32-byte ``tag``; and its digest."""
    suffix = tag.encode().ljust(32, b"-")[:32]
    hasher = _BASE_HASH[size].copy()
    hasher.update(suffix)
    return [memoryview(_BASE[size]), memoryview(suffix)], "sha256:" + hasher.hexdigest()


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


async def expect(response: aiohttp.ClientResponse, status: int, what: str) -> None:
    if response.status != status:
        body = (await response.text())[:300]
        raise RuntimeError(f"{what}: expected HTTP {status}, got {response.status}: {body}")
    await response.read()


async def push_monolithic(s: aiohttp.ClientSession, url: str, name: str, size: int, tag: str) -> str:
    parts, digest = blob_parts(size, tag)
    async with s.post(f"{url}/v2/{name}/blobs/uploads/") as r:
        await expect(r, 202, "POST upload")
        location = absolute(url, r.headers["Location"])
    sep = "&" if "?" in location else "?"
    async with s.put(f"{location}{sep}digest={digest}", data=SlicedPayload(parts)) as r:
        await expect(r, 201, f"PUT blob {digest}")
    return digest


async def push_chunked(s: aiohttp.ClientSession, url: str, name: str, size: int, tag: str) -> str:
    parts, digest = blob_parts(size, tag)
    whole = [(p, i) for p in parts for i in range(0, p.nbytes, CHUNK)]
    async with s.post(f"{url}/v2/{name}/blobs/uploads/") as r:
        await expect(r, 202, "POST upload")
        location = absolute(url, r.headers["Location"])
    offset = 0
    for part, start in whole:
        chunk = part[start : start + CHUNK]
        headers = {"Content-Range": f"{offset}-{offset + chunk.nbytes - 1}", "Content-Type": "application/octet-stream"}
        async with s.patch(location, data=SlicedPayload([chunk]), headers=headers) as r:
            await expect(r, 202, f"PATCH {digest} at {offset}")
            location = absolute(url, r.headers["Location"])
        offset += chunk.nbytes
    sep = "&" if "?" in location else "?"
    async with s.put(f"{location}{sep}digest={digest}") as r:
        await expect(r, 201, f"PUT (close) {digest}")
    return digest


async def pull(s: aiohttp.ClientSession, url: str, name: str, digest: str) -> int:
    """GET a blob and discard it; the byte count is checked, the digest is not (that is client CPU)."""
    received = 0
    async with s.get(f"{url}/v2/{name}/blobs/{digest}") as r:
        if r.status != 200:
            raise RuntimeError(f"GET blob {digest}: HTTP {r.status}")
        async for chunk in r.content.iter_chunked(4 * MiB):
            received += len(chunk)
    return received


def manifest_body(config: dict[str, Any], layer: dict[str, Any], marker: str) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer],
           "annotations": {"org.example.bench": marker}}  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


async def client_worker(
    phase: Phase, url: str, session: aiohttp.ClientSession, worker: str, plan: dict[str, Any]
) -> tuple[int, int, list[str]]:
    """One concurrent client; returns (operations, bytes moved, digests pushed)."""
    operations = moved = 0
    digests: list[str] = []
    if phase.size:
        for i in range(phase.ops_per_client):
            tag = f"{plan['nonce']}-{worker}-{i}"
            if phase.kind == "pull":
                moved += await pull(
                    session, url, "bench/blobs", plan["digests"][(plan["index"] + i) % len(plan["digests"])]
                )
            else:
                push = push_monolithic if phase.kind == "push" else push_chunked
                digests.append(await push(session, url, "bench/blobs", phase.size, tag))
                moved += phase.size + 32
            operations += 1
        return operations, moved, digests
    deadline = time.monotonic() + phase.duration
    accept = {"Accept": OCI_MANIFEST}
    while time.monotonic() < deadline and operations < MAX_REQUESTS_PER_CLIENT:
        if phase.kind == "manifest-put":
            body = manifest_body(plan["config"], plan["layer"], f"{plan['nonce']}-{worker}-{operations}")
            headers = {"Content-Type": OCI_MANIFEST}
            async with session.put(
                f"{url}/v2/bench/manifests/manifests/{worker}-{operations}", data=body, headers=headers
            ) as r:
                await expect(r, 201, "PUT manifest")
        elif phase.kind == "manifest-get":
            tag = f"t{(plan['index'] + operations) % TAG_COUNT}"
            async with session.get(f"{url}/v2/bench/tags/manifests/{tag}", headers=accept) as r:
                await expect(r, 200, f"GET manifest {tag}")
        else:
            async with session.get(f"{url}/v2/bench/tags/tags/list") as r:
                await expect(r, 200, "GET tags/list")
        operations += 1
    return operations, moved, digests


async def client_process_main(
    phase: Phase, url: str, proc: int, clients: int, plan: dict[str, Any], barrier: Any
) -> dict:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        async with session.get(f"{url}/v2/") as r:  # open one connection before the clock starts
            await r.read()
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        cpu0, start = time.process_time(), time.monotonic()
        first = proc * clients
        jobs = [
            client_worker(phase, url, session, f"p{proc}w{w}", {**plan, "index": (first + w) * phase.ops_per_client})
            for w in range(clients)
        ]
        results = await asyncio.gather(*jobs)
        end = time.monotonic()
    return {"start": start, "end": end, "cpu": time.process_time() - cpu0,
            "operations": sum(r[0] for r in results), "bytes": sum(r[1] for r in results),
            "digests": [d for r in results for d in r[2]]}  # fmt: skip


def client_process(phase: Phase, url: str, proc: int, clients: int, plan: dict, barrier: Any, queue: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        queue.put(asyncio.run(client_process_main(phase, url, proc, clients, plan, barrier)))
    except BaseException as exc:  # report instead of hanging the parent
        barrier.abort()
        queue.put({"error": f"client process {proc}: {exc}"})


def run_phase(phase: Phase, url: str, procs: int, plan: dict[str, Any], server: RegistryProcess | None) -> Result:
    procs = max(1, min(procs, phase.clients))
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(procs + 1), ctx.Queue()
    share = [phase.clients // procs + (1 if i < phase.clients % procs else 0) for i in range(procs)]
    children = [
        ctx.Process(target=client_process, args=(phase, url, i, n, plan, barrier, queue), daemon=True)
        for i, n in enumerate(share)
    ]
    for child in children:
        child.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a child failed: its report says why
        barrier.wait(timeout=120)
    cpu0 = group_cpu_seconds(server.process.pid) if server and server.process else None
    reports = [queue.get(timeout=3600) for _ in children]
    cpu1 = group_cpu_seconds(server.process.pid) if server and server.process else None
    for child in children:
        child.join(30)
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise RuntimeError(f"{phase.figure} x{phase.clients}: {errors[0]}")
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    operations = sum(r["operations"] for r in reports)
    moved = sum(r["bytes"] for r in reports)
    value = moved / seconds / 1e6 if phase.size else operations / seconds
    return Result(
        phase.figure, phase.clients, phase.unit, value, operations, seconds,
        None if cpu0 is None or cpu1 is None else cpu1 - cpu0, sum(r["cpu"] for r in reports),
        [d for r in reports for d in r["digests"]],
    )  # fmt: skip


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        return response


def setup_repositories(url: str, nonce: str) -> dict[str, Any]:
    """A config and a layer blob in bench/manifests and bench/tags, and TAG_COUNT tags in bench/tags."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": nonce}).encode()  # fmt: skip
    layer = os.urandom(4096)
    descriptors = {}
    for key, data, media_type in (("config", config, "application/vnd.oci.image.config.v1+json"),
                                  ("layer", layer, "application/vnd.oci.image.layer.v1.tar+gzip")):  # fmt: skip
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        for name in ("bench/manifests", "bench/tags"):
            location = absolute(url, http("POST", f"{url}/v2/{name}/blobs/uploads/").headers["Location"])
            sep = "&" if "?" in location else "?"
            http("PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
        descriptors[key] = {"mediaType": media_type, "digest": digest, "size": len(data)}
    for i in range(TAG_COUNT):
        body = manifest_body(descriptors["config"], descriptors["layer"], f"{nonce}-tag-{i}")
        http("PUT", f"{url}/v2/bench/tags/manifests/t{i}", body, {"Content-Type": OCI_MANIFEST})
    return {"nonce": nonce, **descriptors}


def phases(args: argparse.Namespace) -> list[Phase]:
    """Every (figure, clients) to measure: blob phases move ``budget`` bytes (at least one blob per
    client), request-rate phases run for ``duration`` seconds."""
    sizes = [int(s) * MiB for s in (args.sizes or ("1,16" if args.quick else "1,16,256")).split(",")]
    budget = (args.budget_mib or (64 if args.quick else 1024)) * MiB
    duration = args.duration or (1.0 if args.quick else 3.0)
    client_counts = [int(c) for c in args.clients.split(",")]
    out: list[Phase] = []
    for clients in client_counts:
        for size in sizes:
            ops = max(1, math.ceil(min(budget, MAX_BLOBS * size) / (size * clients)))
            out += [Phase(kind, clients, size, ops) for kind in ("push", "push-chunked", "pull")]
        out += [Phase(kind, clients, duration=duration) for kind in ("manifest-put", "manifest-get", "tags-list")]
    if args.only:
        kinds = set(args.only.split(","))
        # a pull needs the blobs of the push of its size
        out = [p for p in out if p.kind in kinds or (p.kind == "push" and "pull" in kinds)]
    return out


@dataclass
class Target:
    """A registry under test; ``server`` is set when this script started it (and may wipe it)."""

    label: str
    url: str
    server: RegistryProcess | None = None

    def wipe(self) -> None:
        """Restart the server on an empty root, so big blob figures never pile up on disk."""
        if self.server is None:
            return
        self.server.stop()
        shutil.rmtree(self.server.root, ignore_errors=True)
        self.server.root.mkdir(parents=True)
        self.server.start()


def groups(plan_phases: list[Phase]) -> list[list[Phase]]:
    """Phases that must run together on one registry: push, chunked push and pull of one size (the pull
    reads what the push wrote), or the request-rate phases of one client count (they share a setup)."""
    out: list[list[Phase]] = []
    for phase in plan_phases:
        if out and (out[-1][0].clients, out[-1][0].size) == (phase.clients, phase.size):
            out[-1].append(phase)
        else:
            out.append([phase])
    return out


def run_group(target: Target, group: list[Phase], procs: int, say: Any) -> list[Result]:
    target.wipe()
    nonce = os.urandom(6).hex()
    plan: dict[str, Any] = {"nonce": nonce}
    if any(not p.size for p in group):
        plan = setup_repositories(target.url, nonce)
    results: list[Result] = []
    pushed: list[str] = []
    for phase in group:
        phase_plan = {**plan, "nonce": f"{nonce}-{phase.kind}-{phase.clients}", "digests": pushed}
        result = run_phase(phase, target.url, procs if phase.clients > 1 else 1, phase_plan, target.server)
        if phase.kind == "push":
            pushed = result.digests
        results.append(result)
        say(f"  {target.label:14} {phase.figure:22} x{phase.clients:<3} {result.value:10.1f} {result.unit}")
    return results


def bench(
    targets: list[Target], plan_phases: list[Phase], procs: int, repeat: int, say: Any
) -> dict[str, list[Result]]:
    """Run every group on every target, alternating which goes first, ``repeat`` times; keep each
    figure's best run (background load on a shared machine only ever makes a run slower)."""
    best: dict[str, dict[tuple[str, int], Result]] = {t.label: {} for t in targets}
    turn = 0
    for _ in range(repeat):
        for group in groups(plan_phases):
            order = targets if turn % 2 == 0 else targets[::-1]
            turn += 1
            for target in order:
                for result in run_group(target, group, procs, say):
                    key = (result.figure, result.clients)
                    if key not in best[target.label] or result.value > best[target.label][key].value:
                        best[target.label][key] = result
    keys = [(p.figure, p.clients) for p in plan_phases]
    return {label: [found[k] for k in keys] for label, found in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="*", help="registry base URLs (default: start lamina and distribution)")
    parser.add_argument("--quick", action="store_true", help="short run: 1 and 16 MiB blobs, 1 s per rate")
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrency levels (default 1,32)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes when clients > 1")
    parser.add_argument("--sizes", help="comma-separated blob sizes in MiB (default 1,16,256; quick 1,16)")
    parser.add_argument("--duration", type=float, help="seconds per request-rate figure (default 3; quick 1)")
    parser.add_argument("--budget-mib", type=int, help="MiB moved per blob figure (default 1024; quick 64)")
    parser.add_argument("--only", help="comma-separated kinds to run (push,push-chunked,pull,manifest-put,...)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure, best kept (default 1)")
    parser.add_argument("--lamina-workers", type=int, default=2, help="lamina's --workers when started here")
    args = parser.parse_args(argv)
    plan_phases = phases(args)
    prepare_buffers({p.size for p in plan_phases if p.size})
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    if args.urls:
        results = bench([Target(u, u.rstrip("/")) for u in args.urls], plan_phases, args.client_procs, args.repeat, say)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-registry-"))
        try:
            with (
                start_lamina(workdir / "lamina", workers=args.lamina_workers) as lamina,
                start_distribution(workdir / "distribution") as distribution,
            ):
                targets = [Target("lamina", lamina.url, lamina), Target("distribution", distribution.url, distribution)]
                for t in targets:
                    say(f"{t.label} at {t.url}")
                try:
                    results = bench(targets, plan_phases, args.client_procs, args.repeat, say)
                except RuntimeError as exc:
                    for t in targets:
                        assert t.server is not None
                        say(f"--- {t.label} output (last lines) ---\n{t.server.stderr_text(3000)}")
                    print(f"bench/registry.py: {exc}", file=sys.stderr)
                    return 1
                for t in targets:
                    t.wipe()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, args.json, args)
    return 0


def prepare_buffers(sizes: set[int]) -> None:
    for size in sizes:
        if size not in _BASE:
            _BASE[size] = os.urandom(size)
            _BASE_HASH[size] = hashlib.sha256(_BASE[size])


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Reliability figures of ``lamina registry serve``: a bounded load run and 1,000 open upload sessions.

``bench/reliability.py`` starts lamina's registry on a free loopback port with a temporary root and runs:

- **load**: ``--clients`` (64) concurrent clients, each looping for ``--duration`` (10 s) seconds over
  one push (POST + PUT ``?digest=`` of a unique 4 KiB blob, then a manifest PUT by tag) and one pull
  (manifest GET by tag, then the blob's GET, both checked against their digest). Reported: operations
  and requests done, errors (any unexpected status or a wrong body), p50/p99 request latency, and the
  peak RSS of the server (the sum over its process group: supervisor and workers), sampled every 50 ms.
- **sessions**: ``--sessions`` (1,000) upload sessions opened at once over 50 repositories (POST, then a
  1 KiB PATCH each, never finished), on a server whose ``[limits]`` allow them all (:data:`SESSIONS_CONFIG`;
  the defaults refuse a single user's 129th open session with 429). Reported: how many were opened, how
  many were refused with ``TOOMANYREQUESTS``, and the server's RSS before and after.

``--write-docs`` puts the figures into ``docs/reliability.md`` between its ``reliability-figures``
markers. ``tests/reliability/test_load.py`` imports :func:`load_run` and :func:`open_sessions` and
asserts on them (0 errors, RSS bounded), so CI checks what the docs report.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.registries import start_lamina

__all__ = [
    "SESSIONS_CONFIG", "LoadReport", "RssSampler", "SessionsReport", "group_rss_bytes", "load_run", "open_sessions",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
# The sessions run holds 1,000 sessions of one (anonymous) user open: lift the per-user and per-repository
# limits (defaults 128 and 256) so the server really holds them all.
SESSIONS_CONFIG = "[limits]\nupload_sessions_per_user = 100000\nupload_sessions_per_repository = 100000\n"
BEGIN, END = "<!-- reliability-figures:begin -->", "<!-- reliability-figures:end -->"


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every live process in process group ``pgid`` (Linux /proc), in bytes."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is the 5th field of stat
            total += int(fields[21]) * page  # rss in pages (24th field)
    return total


class RssSampler:
    """Samples :func:`group_rss_bytes` every ``interval`` seconds in a thread; ``peak`` is the largest."""

    def __init__(self, pgid: int, interval: float = 0.05) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, group_rss_bytes(self.pgid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = group_rss_bytes(self.pgid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class LoadReport:
    clients: int
    duration_s: float
    operations: int  # one push + one pull each
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rss_start_mib: float
    rss_peak_mib: float
    first_errors: list[str] = field(default_factory=list)


@dataclass
class SessionsReport:
    sessions: int
    opened: int
    refused: int  # TOOMANYREQUESTS (429): the registry's upload-session limits
    errors: int  # anything else
    rss_before_mib: float
    rss_after_mib: float
    first_errors: list[str] = field(default_factory=list)

    @property
    def growth_mib(self) -> float:
        return self.rss_after_mib - self.rss_before_mib


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Counters:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.operations = 0

    async def request(self, session: aiohttp.ClientSession, method: str, url: str, expect: int,
                      **kwargs: object) -> bytes | None:
        """One timed request; the body when it answered ``expect``, else None (and an error counted)."""
        start = time.perf_counter()
        try:
            async with session.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        finally:
            self.latencies.append(time.perf_counter() - start)
        if status != expect:
            self.errors.append(f"{method} {url}: HTTP {status} {body[:200]!r}")
            return None
        return body


async def _client(base: str, number: int, deadline: float, counters: _Counters) -> None:
    name = f"load/c{number}"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, timeout=timeout) as session:
        i = 0
        while time.monotonic() < deadline:
            blob = os.urandom(4096)
            config = json.dumps({"architecture": "amd64", "os": "linux", "client": number, "i": i}).encode()
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": _digest(blob), "size": len(blob)}],
            }).encode()
            ok = True
            for data in (config, blob):
                ok = ok and await counters.request(session, "POST", f"/v2/{name}/blobs/uploads/", 201,
                                                   params={"digest": _digest(data)}, data=data) is not None
            tag = f"t{i % 8}"
            ok = ok and await counters.request(session, "PUT", f"/v2/{name}/manifests/{tag}", 201, data=manifest,
                                               headers={"Content-Type": OCI_MANIFEST}) is not None
            if ok:
                got = await counters.request(session, "GET", f"/v2/{name}/manifests/{tag}", 200,
                                             headers={"Accept": OCI_MANIFEST})
                if got is not None and got != manifest:
                    counters.errors.append(f"GET {name}:{tag}: another manifest than the one just pushed")
                pulled = await counters.request(session, "GET", f"/v2/{name}/blobs/{_digest(blob)}", 200)
                if pulled is not None and pulled != blob:
                    counters.errors.append(f"GET {name} blob {_digest(blob)}: wrong bytes")
            counters.operations += 1
            i += 1


async def _load(base: str, clients: int, duration: float) -> _Counters:
    counters = _Counters()
    deadline = time.monotonic() + duration
    await asyncio.gather(*(_client(base, n, deadline, counters) for n in range(clients)))
    return counters


def load_run(base: str, pgid: int, *, clients: int = 64, duration: float = 10.0) -> LoadReport:
    """``clients`` concurrent push+pull loops against ``base`` for ``duration`` seconds; see the module doc."""
    with RssSampler(pgid) as rss:
        start_rss = rss.peak
        started = time.monotonic()
        counters = asyncio.run(_load(base, clients, duration))
        elapsed = time.monotonic() - started
    mib = 1024 * 1024
    return LoadReport(
        clients=clients, duration_s=round(elapsed, 1), operations=counters.operations,
        requests=len(counters.latencies), errors=len(counters.errors),
        p50_ms=round(_percentile(counters.latencies, 0.50) * 1000, 1),
        p99_ms=round(_percentile(counters.latencies, 0.99) * 1000, 1),
        rss_start_mib=round(start_rss / mib, 1), rss_peak_mib=round(rss.peak / mib, 1),
        first_errors=counters.errors[:5],
    )


async def _sessions(base: str, sessions: int, repositories: int) -> tuple[int, int, list[str]]:
    opened = refused = 0
    errors: list[str] = []
    limit = asyncio.Semaphore(128)  # 1,000 sessions at once, at most 128 requests in flight
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def one(n: int) -> None:
            nonlocal opened, refused
            async with limit:
                async with http.post(f"/v2/sessions/r{n % repositories}/blobs/uploads/") as response:
                    body = await response.read()
                    if response.status == 429:
                        refused += 1
                        return
                    if response.status != 202:
                        errors.append(f"POST upload {n}: HTTP {response.status} {body[:200]!r}")
                        return
                    location = response.headers["Location"]
                chunk = os.urandom(1024)
                headers = {"Content-Range": "0-1023", "Content-Type": "application/octet-stream"}
                async with http.patch(location, data=chunk, headers=headers) as response:
                    body = await response.read()
                    if response.status != 202:
                        errors.append(f"PATCH upload {n}: HTTP {response.status} {body[:200]!r}")
                        return
                opened += 1

        await asyncio.gather(*(one(n) for n in range(sessions)))
    return opened, refused, errors


def open_sessions(base: str, pgid: int, *, sessions: int = 1000, repositories: int = 50) -> SessionsReport:
    """Open ``sessions`` upload sessions over ``repositories`` repositories, each with a 1 KiB chunk, and
    leave them open; the server's RSS before and after (sampled once each, after a short settle)."""
    mib = 1024 * 1024
    before = group_rss_bytes(pgid)
    opened, refused, errors = asyncio.run(_sessions(base, sessions, repositories))
    time.sleep(0.5)
    after = group_rss_bytes(pgid)
    return SessionsReport(sessions=sessions, opened=opened, refused=refused, errors=len(errors),
                          rss_before_mib=round(before / mib, 1), rss_after_mib=round(after / mib, 1),
                          first_errors=errors[:5])


def markdown(load: LoadReport, sessions: SessionsReport, workers: int) -> str:
    machine = f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    return "\n".join([
        f"Measured by `bench/reliability.py --write-docs` ({machine}, server `--workers {workers}`, "
        "clients in the same machine):",
        "",
        "| Figure | Value |",
        "| --- | --- |",
        f"| load: clients × duration | {load.clients} × {load.duration_s} s |",
        f"| load: push+pull operations / requests | {load.operations} / {load.requests} |",
        f"| load: errors | {load.errors} |",
        f"| load: request latency p50 / p99 | {load.p50_ms} ms / {load.p99_ms} ms |",
        f"| load: server RSS at start / peak | {load.rss_start_mib} MiB / {load.rss_peak_mib} MiB |",
        f"| sessions: opened / refused (429) / errors | {sessions.opened} / {sessions.refused} / "
        f"{sessions.errors} of {sessions.sessions} |",
        f"| sessions: server RSS before / after (growth) | {sessions.rss_before_mib} MiB / "
        f"{sessions.rss_after_mib} MiB ({sessions.growth_mib:+.1f} MiB) |",
    ])


def write_docs(text: str, path: Path = DOCS) -> None:
    doc = path.read_text()
    head, sep, rest = doc.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"error: {path} lacks the {BEGIN} ... {END} markers; add them where the figures go")
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64, help="concurrent load clients (default 64)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--sessions", type=int, default=1000, help="upload sessions to open (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS}")
    args = parser.parse_args(argv)
    for option in ("clients", "duration", "sessions", "workers"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option} must be positive, got {getattr(args, option)}")
    with tempfile.TemporaryDirectory(prefix="lamina-reliability-") as tmp:
        with start_lamina(Path(tmp) / "load", workers=args.workers) as server:
            assert server.process is not None
            load = load_run(server.url, server.process.pid, clients=args.clients, duration=args.duration)
        with start_lamina(Path(tmp) / "sessions", workers=args.workers, config=SESSIONS_CONFIG) as server:
            assert server.process is not None
            sessions = open_sessions(server.url, server.process.pid, sessions=args.sessions)
    if args.json:
        print(json.dumps({"load": asdict(load), "sessions": asdict(sessions)}, indent=2))
    else:
        print(markdown(load, sessions, args.workers))
    if args.write_docs:
        write_docs(markdown(load, sessions, args.workers))
    return 1 if load.errors or sessions.errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""``/metrics`` (Prometheus text format 0.0.4), ``/healthz`` and structured JSON access logs.

Why snapshot files: the server runs N worker processes behind one port, and a scrape lands on any one
of them. Each worker keeps its counters in memory and writes them to ``ROOT/run/metrics/<pid>.json``
(atomically, at most every second and on every scrape); the worker that answers a scrape sums the
files of live workers. Storage figures (bytes, repositories, open upload sessions) come from the
metadata database at scrape time, so they are the same whoever answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from lamina.store import Storage

__all__ = ["METRICS", "Metrics", "healthz", "metrics_handler", "response_hook", "timing_middleware"]

access_log = logging.getLogger("lamina.registry.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Key = tuple[str, tuple[tuple[str, str], ...]]

HELP = {
    "lamina_http_requests_total": ("counter", "HTTP requests by route pattern, method and status."),
    "lamina_http_request_bytes_total": ("counter", "Request body bytes received, by route pattern."),
    "lamina_http_response_bytes_total": ("counter", "Response body bytes sent, by route pattern."),
    "lamina_http_request_duration_seconds_total": ("counter", "Time spent answering requests, by route pattern."),
    "lamina_upload_sessions_started_total": ("counter", "Blob upload sessions started."),
    "lamina_gc_runs_total": ("counter", "Garbage collections completed in the server (not the CLI)."),
    "lamina_gc_bytes_freed_total": ("counter", "Blob bytes deleted by garbage collection."),
    "lamina_gc_blobs_deleted_total": ("counter", "Blobs deleted by garbage collection."),
    "lamina_lifecycle_manifests_expired_total": ("counter", "Manifests removed by lifecycle rules."),
    "lamina_lifecycle_cache_tags_pruned_total": ("counter", "Cache tags rewritten without stale records."),
    "lamina_storage_bytes": ("gauge", "Bytes of distinct blobs linked into any repository."),
    "lamina_storage_blobs": ("gauge", "Distinct blobs linked into any repository."),
    "lamina_repositories": ("gauge", "Repositories."),
    "lamina_manifests": ("gauge", "Manifests, all repositories."),
    "lamina_upload_sessions_open": ("gauge", "Upload sessions started and not yet finished or expired."),
}


class Metrics:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.values: dict[Key, float] = defaultdict(float)
        self._written = 0.0
        self._dirty = False

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] += amount
        self._dirty = True

    def flush(self, force: bool = False) -> None:
        """Write this process's counters for the other workers (atomic rename), at most once a second."""
        now = time.monotonic()
        if not self._dirty or (not force and now - self._written < 1.0):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = [[name, list(map(list, labels)), value] for (name, labels), value in self.values.items()]
        target = self.directory / f"{os.getpid()}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, target)
        self._written, self._dirty = now, False

    def merged(self) -> dict[Key, float]:
        """Counters of every live worker (this one's from memory)."""
        self.flush(force=True)
        total: dict[Key, float] = defaultdict(float)
        for key, value in self.values.items():
            total[key] += value
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                stem, _, suffix = entry.name.partition(".")
                if suffix != "json" or not stem.isdigit() or int(stem) == os.getpid():
                    continue
                try:
                    os.kill(int(stem), 0)
                except ProcessLookupError:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    continue
                except PermissionError:
                    pass
                try:
                    rows = json.loads(Path(entry.path).read_text())
                except (OSError, ValueError):
                    continue
                for name, labels, value in rows:
                    total[(name, tuple(tuple(pair) for pair in labels))] += value
        return total


METRICS = web.AppKey("metrics", Metrics)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _storage_gauges(storage: Storage) -> dict[str, float]:
    totals = storage.metadata.storage_totals()
    return {f"lamina_{name}": float(value) for name, value in totals.items()}


def render(counters: dict[Key, float], gauges: dict[str, float]) -> str:
    by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = defaultdict(list)
    for (name, labels), value in counters.items():
        by_name[name].append((labels, value))
    for name, value in gauges.items():
        by_name[name].append(((), value))
    lines: list[str] = []
    for name in sorted(set(HELP) | set(by_name)):
        kind, text = HELP.get(name, ("untyped", name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        samples = by_name.get(name) or ([((), 0.0)] if kind == "counter" and not name.startswith("lamina_http") else [])
        for labels, value in sorted(samples):
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


async def metrics_handler(request: web.Request) -> web.Response:
    from .services import OFFLOAD, STORAGE

    gauges = await request.app[OFFLOAD].run(_storage_gauges, request.app[STORAGE])
    text = render(request.app[METRICS].merged(), gauges)
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def healthz(request: web.Request) -> web.Response:
    """200 when the metadata database answers and the blob store is there (the blob directory, or the S3
    bucket: one ``HEAD`` of it); 503 otherwise. A load balancer's health check (docs/registry.md,
    "Running several replicas") takes a replica out of rotation on a 503."""
    from lamina.store import S3BlobStore, StoreError

    from .services import OFFLOAD, STORAGE

    storage = request.app[STORAGE]

    def probe() -> str | None:
        problem = storage.metadata.health_problem()
        if problem is not None:
            return problem
        if isinstance(storage.blobs, S3BlobStore):
            try:
                storage.blobs.client.check_access()
            except StoreError as exc:
                return str(exc)
            return None
        if not storage.paths.blobs.is_dir():
            return f"blob directory {storage.paths.blobs} is missing"
        return None

    problem = await request.app[OFFLOAD].run(probe)
    if problem:
        return web.json_response({"status": "unhealthy", "problem": problem}, status=503)
    return web.json_response({"status": "ok"})


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _route(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


STARTED = web.RequestKey("started", float)


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stamp the start; the response hook below does the counting once status and length are known."""
    request[STARTED] = time.monotonic()
    return await handler(request)


def response_hook(with_access_log: bool) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: counts the request and writes its access-log line.

    Why at prepare time: a blob GET returns a file response whose length is only known when aiohttp
    prepares it, after every middleware has returned. The duration is therefore time to first byte."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        elapsed = time.monotonic() - request.get(STARTED, time.monotonic())
        route = _route(request)
        status = response.status
        bytes_in = request.content.total_bytes if request.body_exists else 0
        bytes_out = (response.content_length or 0) if request.method != "HEAD" else 0
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.inc("lamina_http_requests_total", route=route, method=request.method, status=str(status))
            metrics.inc("lamina_http_request_bytes_total", bytes_in, route=route)
            metrics.inc("lamina_http_response_bytes_total", bytes_out, route=route)
            metrics.inc("lamina_http_request_duration_seconds_total", elapsed, route=route)
            if route.endswith("/blobs/uploads/") and request.method == "POST" and status == 202:
                metrics.inc("lamina_upload_sessions_started_total")
            metrics.flush()
        if with_access_log:
            from .auth.middleware import IDENTITY

            identity = request.get(IDENTITY)
            access_log.info(json.dumps({
                "time": _timestamp(),
                "remote": request.remote,
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": status,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "duration_ms": round(elapsed * 1000, 3),
                "user": getattr(identity, "user", None),
                "user_agent": request.headers.get("User-Agent"),
            }, separators=(",", ":")))

    return hook

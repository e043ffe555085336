"""``/metrics`` (Prometheus text format 0.0.4, written by prometheus_client), ``/healthz`` and structured JSON
access logs.

Summed across workers: under ``lamina registry serve`` every worker records into prometheus_client's
multiprocess files in ``ROOT/run/metrics`` (:mod:`lamina.registry.metricsdir`) and the worker that answers a
scrape merges the files of all of them. An app served in-process with no such directory (the test client)
keeps its metrics in its own ``CollectorRegistry``. Storage figures (bytes, repositories, open upload
sessions) are not recorded by anyone: they are read from the metadata store at scrape time, so they are the
same whoever answers and no dead worker can leave one behind.

Label cardinality stays bounded: ``route`` is the route's pattern (``/v2/{name}/blobs/{digest}``, never the
path), ``method`` one of the HTTP methods the registry knows (else ``other``), ``status`` an HTTP status.

The answer is always the 0.0.4 text format, never OpenMetrics: the counter
``lamina_http_request_duration_seconds_total`` (kept for existing dashboards; it is the histogram's ``_sum``
by route, computed at scrape time) and the histogram ``lamina_http_request_duration_seconds`` are distinct
series in 0.0.4 but would be one family name in OpenMetrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .metricsdir import MULTIPROC_ENV

if TYPE_CHECKING:
    from lamina.store.sweep import SweepResult

    from .lifecycle import LifecycleResult

__all__ = [
    "BLOB_BYTES_BUCKETS",
    "LATENCY_BUCKETS",
    "METRICS",
    "Metrics",
    "healthz",
    "metrics_handler",
    "response_hook",
    "timing_middleware",
]

access_log = logging.getLogger("lamina.registry.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request latency: 1 ms (a manifest or HEAD from cache) to 60 s (a large blob upload), about 2.5x apart.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Blob bytes per request: 1 KiB (a config blob) to 16 GiB, 4x apart.
BLOB_BYTES_BUCKETS = tuple(float(1024 * 4**n) for n in range(13))
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DURATION = "lamina_http_request_duration_seconds"

STORAGE_HELP = {
    "storage_bytes": "Bytes of distinct blobs linked into any repository.",
    "storage_blobs": "Distinct blobs linked into any repository.",
    "repositories": "Repositories.",
    "manifests": "Manifests, all repositories.",
    "upload_sessions_open": "Upload sessions started and not yet finished or expired.",
}


class _RequestSeries:
    """The children of one (route, method, status): ``labels()`` resolved once, not on every request."""

    __slots__ = ("blob_bytes", "bytes_in", "bytes_out", "duration", "requests")

    def __init__(self, metrics: Metrics, route: str, method: str, status: int) -> None:
        self.requests = metrics.requests.labels(route, method, str(status))
        self.bytes_in = metrics.request_bytes.labels(route)
        self.bytes_out = metrics.response_bytes.labels(route)
        self.duration = metrics.duration.labels(method, route, f"{status // 100}xx")
        self.blob_bytes = metrics.blob_bytes.labels(method, route) if "/blobs/" in route else None


class Metrics:
    """The registry's metrics, recorded with prometheus_client.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set by ``lamina registry serve``, which must equal
    ``directory``) the metric objects write this worker's files and a scrape reads every worker's; otherwise
    they live in this object's own registry."""

    def __init__(self, directory: Path) -> None:
        shared = os.environ.get(MULTIPROC_ENV)
        self.directory: Path | None = None
        registry: CollectorRegistry | None = None
        if shared is None:
            registry = CollectorRegistry()
            self._source: CollectorRegistry | MultiProcessCollector = registry
        else:
            if Path(shared) != directory:
                raise RuntimeError(f"{MULTIPROC_ENV}={shared} is not this registry's metrics directory {directory}")
            if not getattr(values.ValueClass, "_multiprocess", False):
                raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set: "
                                   "call lamina.registry.metricsdir.prepare_metrics_directory first")
            self.directory = directory
            self._source = MultiProcessCollector(None, path=shared)
        r = registry
        self.requests = Counter("lamina_http_requests", "HTTP requests by route pattern, method and status.",
                                ("route", "method", "status"), registry=r)
        self.request_bytes = Counter("lamina_http_request_bytes", "Request body bytes received, by route pattern.",
                                     ("route",), registry=r)
        self.response_bytes = Counter("lamina_http_response_bytes", "Response body bytes sent, by route pattern.",
                                      ("route",), registry=r)
        self.duration = Histogram(
            DURATION, "Time from the request's arrival to its response's headers (a body sent after them, e.g. a "
            "blob GET's, is not included), by method, route pattern and status class.",
            ("method", "route", "status_class"), buckets=LATENCY_BUCKETS, registry=r)
        self.blob_bytes = Histogram(
            "lamina_http_blob_bytes", "Blob bytes per successful request: received by an upload POST, PATCH or "
            "PUT, sent by a blob GET; by method and route pattern.",
            ("method", "route"), buckets=BLOB_BYTES_BUCKETS, registry=r)
        self.workers = Gauge("lamina_workers", "Live worker processes serving this registry.",
                             multiprocess_mode="livesum", registry=r)
        self.workers.set(1)
        self.uploads_started = Counter("lamina_upload_sessions_started", "Blob upload sessions started.",
                                       registry=r)
        self.gc_runs = Counter("lamina_gc_runs", "Garbage collections completed in the server (not the CLI).",
                               registry=r)
        self.gc_bytes = Counter("lamina_gc_bytes_freed", "Blob bytes deleted by garbage collection.", registry=r)
        self.gc_blobs = Counter("lamina_gc_blobs_deleted", "Blobs deleted by garbage collection.", registry=r)
        self.expired = Counter("lamina_lifecycle_manifests_expired", "Manifests removed by lifecycle rules.",
                               registry=r)
        self.pruned = Counter("lamina_lifecycle_cache_tags_pruned", "Cache tags rewritten without stale records.",
                              registry=r)
        self._series: dict[tuple[str, str, int], _RequestSeries] = {}

    def observe(self, route: str, method: str, status: int, bytes_in: int, bytes_out: int, seconds: float) -> None:
        """Count one answered request."""
        method = method if method in METHODS else "other"
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series[(route, method, status)] = _RequestSeries(self, route, method, status)
        series.requests.inc()
        if bytes_in:
            series.bytes_in.inc(bytes_in)
        if bytes_out:
            series.bytes_out.inc(bytes_out)
        series.duration.observe(seconds)
        if series.blob_bytes is not None and status < 300:  # not an error's body
            blob = bytes_out if method == "GET" else bytes_in
            if blob:
                series.blob_bytes.observe(blob)
        if method == "POST" and status == 202 and route.endswith(("/blobs/uploads/", "/blobs/uploads")):
            self.uploads_started.inc()

    def count_gc(self, result: SweepResult) -> None:
        self.gc_runs.inc()
        self.gc_bytes.inc(result.bytes_freed)
        self.gc_blobs.inc(len(result.blobs))

    def count_lifecycle(self, result: LifecycleResult) -> None:
        self.expired.inc(len(result.expired))
        self.pruned.inc(len(result.pruned))

    def _forget_dead_workers(self) -> None:
        """Drop the per-process gauges of workers that died without the supervisor seeing it (SIGKILL)."""
        if self.directory is None:
            return
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if not entry.name.startswith("gauge_live") or not entry.name.endswith(".db"):
                    continue
                pid = entry.name[:-3].rpartition("_")[2]
                if not pid.isdigit():
                    continue
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    mark_process_dead(int(pid), str(self.directory))
                except PermissionError:
                    pass

    def render(self, storage_totals: dict[str, int]) -> bytes:
        """The text every worker answers: all live and dead workers' counters and histograms, live workers'
        gauges, and the storage gauges given (read from the metadata store by the caller)."""
        self._forget_dead_workers()
        return generate_latest(_Exposition(self._source, storage_totals))


class _Exposition:
    """A prometheus_client collector: the recorded families (without OpenMetrics' ``_created`` samples), the
    legacy duration counter derived from the histogram, and the storage gauges."""

    def __init__(self, source: CollectorRegistry | MultiProcessCollector, storage_totals: dict[str, int]) -> None:
        self.source = source
        self.storage_totals = storage_totals

    def collect(self) -> Iterator[Metric]:
        families = sorted(self.source.collect(), key=lambda family: family.name)
        for family in families:
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
            if family.name == DURATION:
                yield _duration_counter(family)
        for name, value in sorted(self.storage_totals.items()):
            yield GaugeMetricFamily(f"lamina_{name}", STORAGE_HELP.get(name, name), value=float(value))


def _duration_counter(histogram: Metric) -> Metric:
    """``lamina_http_request_duration_seconds_total{route}``: the histogram's ``_sum`` added up by route."""
    by_route: dict[str, float] = defaultdict(float)
    for sample in histogram.samples:
        if sample.name == DURATION + "_sum":
            by_route[sample.labels["route"]] += sample.value
    family = CounterMetricFamily(DURATION, "Time spent answering requests, by route pattern (the sum of the "
                                 "histogram lamina_http_request_duration_seconds).", labels=("route",))
    for route, total in sorted(by_route.items()):
        family.add_metric((route,), total)
    return family


METRICS = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    from .services import OFFLOAD, STORAGE

    metrics, storage = request.app[METRICS], request.app[STORAGE]

    def scrape() -> bytes:  # the store's query and the files' merge, off the event loop
        return metrics.render(storage.metadata.storage_totals())

    body = await request.app[OFFLOAD].run(scrape)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


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
            metrics.observe(route, request.method, status, bytes_in, bytes_out, elapsed)
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

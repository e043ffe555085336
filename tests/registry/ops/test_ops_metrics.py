"""``/metrics`` (Prometheus text), ``/healthz`` and the JSON access log."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from opstools import OpsClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from regtools import push_blob, push_image

from lamina.registry.metrics import BLOB_BYTES_BUCKETS, LATENCY_BUCKETS

BLOB_ROUTE = "/v2/{name}/blobs/{digest}"
MANIFEST_ROUTE = "/v2/{name}/manifests/{reference}"


def families(text: str) -> dict[tuple[str, str], Metric]:
    """The scrape parsed by prometheus_client's own parser, by (family name, type)."""
    return {(family.name, family.type): family for family in text_string_to_metric_families(text)}


def values(text: str, name: str, **labels: str) -> list[float]:
    """The values of every sample called ``name`` whose labels include ``labels``."""
    return [s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()]


def sample(text: str, name: str, **labels: str) -> float:
    found = values(text, name, **labels)
    assert len(found) == 1, f"{len(found)} samples {name} {labels} in:\n{text}"
    return found[0]


def label_values(text: str, label: str) -> set[str]:
    return {s.labels[label] for f in text_string_to_metric_families(text) for s in f.samples if label in s.labels}


async def scrape(client: OpsClient) -> str:
    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return await response.text()


async def test_metrics_count_requests_bytes_uploads_and_storage(make_ops_client: OpsClient) -> None:
    client = await make_ops_client()
    await push_image(client, "m/app", "v1", layers=[b"x" * 5000])
    response = await client.get(f"/v2/m/app/blobs/{await push_blob(client, 'm/app', b'y' * 3000)}")
    assert response.status == 200 and len(await response.read()) == 3000
    assert (await client.post("/v2/m/app/blobs/uploads/")).status == 202
    assert (await client.get("/v2/m/app/manifests/nope")).status == 404
    assert (await client.get("/v2/m/app/blobs/sha256:" + "1" * 64)).status == 404  # its error body is no blob
    text = await scrape(client)
    assert "# TYPE lamina_http_requests_total counter" in text
    assert sample(text, "lamina_http_requests_total", route=BLOB_ROUTE, method="GET", status="200") == 1
    assert sample(text, "lamina_http_requests_total", route=MANIFEST_ROUTE, status="404") == 1
    assert sample(text, "lamina_http_response_bytes_total", route=BLOB_ROUTE) >= 3000
    assert sample(text, "lamina_http_request_bytes_total", route="/v2/{name}/blobs/uploads/") >= 8000
    assert sample(text, "lamina_upload_sessions_started_total") == 1
    assert sample(text, "lamina_upload_sessions_open") == 1
    assert sample(text, "lamina_storage_bytes") >= 8000
    assert sample(text, "lamina_repositories") == 1 and sample(text, "lamina_manifests") == 1
    assert sample(text, "lamina_gc_runs_total") == 0
    assert sample(text, "lamina_workers") == 1
    # the latency histogram: one manifest GET answered 404, one blob GET answered 200
    got = {"method": "GET", "route": MANIFEST_ROUTE, "status_class": "4xx"}
    assert sample(text, "lamina_http_request_duration_seconds_count", **got) == 1
    assert sample(text, "lamina_http_request_duration_seconds_bucket", le="+Inf", **got) == 1
    assert sample(text, "lamina_http_request_duration_seconds_bucket", le="60.0", **got) == 1
    # blob bytes per request: the 3000-byte GET lands in the 4 KiB bucket, not the 1 KiB one
    blob_get = {"method": "GET", "route": BLOB_ROUTE}
    assert sample(text, "lamina_http_blob_bytes_sum", **blob_get) == 3000
    assert sample(text, "lamina_http_blob_bytes_bucket", le="1024.0", **blob_get) == 0
    assert sample(text, "lamina_http_blob_bytes_bucket", le="4096.0", **blob_get) == 1
    uploads = values(text, "lamina_http_blob_bytes_sum", method="POST", route="/v2/{name}/blobs/uploads/")
    assert uploads and uploads[0] >= 8000


async def test_every_family_parses_with_its_type_and_buckets(make_ops_client: OpsClient) -> None:
    client = await make_ops_client()
    await push_image(client, "t/app", "v1", layers=[b"z" * 100])
    assert (await client.get("/v2/t/app/manifests/v1")).status == 200
    assert (await client.get(f"/v2/t/app/blobs/{await push_blob(client, 't/app', b'w' * 10)}")).status == 200
    await scrape(client)  # counts /metrics itself for the next one
    text = await scrape(client)
    found = families(text)
    # docs/registry.md's table lists exactly the series names a scrape has (counters with their _total)
    exposed = {f"{name}_total" if kind == "counter" else name for name, kind in found}
    docs = (Path(__file__).parents[3] / "docs" / "registry.md").read_text()
    section = docs.split("## Metrics: `/metrics`", 1)[1].split("\n## ", 1)[0]
    table = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `lamina_")]
    assert set(re.findall(r"`(lamina_\w+)`", "".join(table))) == exposed
    counters = ("lamina_http_requests", "lamina_http_request_bytes", "lamina_http_response_bytes",
                "lamina_http_request_duration_seconds", "lamina_upload_sessions_started", "lamina_gc_runs",
                "lamina_gc_bytes_freed", "lamina_gc_blobs_deleted", "lamina_lifecycle_manifests_expired",
                "lamina_lifecycle_cache_tags_pruned")
    gauges = ("lamina_storage_bytes", "lamina_storage_blobs", "lamina_repositories", "lamina_manifests",
              "lamina_upload_sessions_open", "lamina_workers")
    for name in counters:
        assert (name, "counter") in found, name
    for name in gauges:
        assert (name, "gauge") in found, name
    for name, buckets in (("lamina_http_request_duration_seconds", LATENCY_BUCKETS),
                          ("lamina_http_blob_bytes", BLOB_BYTES_BUCKETS)):
        histogram = found[(name, "histogram")]
        bounds = sorted({float(s.labels["le"]) for s in histogram.samples if s.name == f"{name}_bucket"})
        assert bounds == [*buckets, float("inf")], name
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 60.0
    assert "_created" not in text and "pid=" not in text


async def test_route_labels_are_route_patterns_never_paths(make_ops_client: OpsClient) -> None:
    client = await make_ops_client()
    assert (await client.get("/v2/deep/nested/repo/manifests/v1")).status == 404
    assert (await client.head("/v2/deep/nested/repo/blobs/sha256:" + "0" * 64)).status == 404
    assert (await client.get("/v2/deep/nested/repo/tags/list")).status == 404
    assert (await client.get("/not/a/registry/path")).status == 404
    assert (await client.request("PROPFIND", "/v2/")).status == 405
    text = await scrape(client)
    routes = label_values(text, "route")
    assert {MANIFEST_ROUTE, BLOB_ROUTE, "/v2/{name}/tags/list", "unmatched"} <= routes
    assert not [r for r in routes if "deep" in r or "sha256" in r or "not/a" in r], routes
    assert label_values(text, "method") <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert sample(text, "lamina_http_request_duration_seconds_count", method="other", route="unmatched",
                  status_class="4xx") == 1  # a method no route has: 405
    assert sample(text, "lamina_http_request_duration_seconds_count", method="HEAD", route=BLOB_ROUTE,
                  status_class="4xx") == 1


async def test_the_duration_counter_is_the_histograms_sum_by_route(make_ops_client: OpsClient) -> None:
    client = await make_ops_client()
    for _ in range(3):
        assert (await client.get("/v2/")).status == 200
        assert (await client.get("/v2/x/manifests/missing")).status == 404
    text = await scrape(client)
    for route in ("/v2/", MANIFEST_ROUTE):
        total = sample(text, "lamina_http_request_duration_seconds_total", route=route)
        parts: Iterable[float] = values(text, "lamina_http_request_duration_seconds_sum", route=route)
        assert total > 0 and total == pytest.approx(sum(parts))


async def test_healthz_answers_ok(make_ops_client: OpsClient) -> None:
    client = await make_ops_client()
    response = await client.get("/healthz")
    assert response.status == 200 and await response.json() == {"status": "ok"}


async def test_access_log_is_one_json_object_per_request(make_ops_client: OpsClient,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    client = await make_ops_client("access_log = true\n")
    with caplog.at_level(logging.INFO, logger="lamina.registry.access"):
        await client.get("/v2/")
        await client.get("/v2/x/manifests/missing", headers={"User-Agent": "test-agent"})
    entries = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lamina.registry.access"]
    assert [e["status"] for e in entries] == [200, 404]
    last = entries[-1]
    assert last["route"] == "/v2/{name}/manifests/{reference}" and last["method"] == "GET"
    assert last["path"] == "/v2/x/manifests/missing" and last["user_agent"] == "test-agent"
    assert {"time", "remote", "bytes_in", "bytes_out", "duration_ms", "user"} <= set(last)


async def test_access_log_is_off_by_default(make_ops_client: OpsClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_ops_client()
    with caplog.at_level(logging.INFO, logger="lamina.registry.access"):
        await client.get("/v2/")
    assert not [r for r in caplog.records if r.name == "lamina.registry.access"]

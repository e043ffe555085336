"""``/metrics`` (Prometheus text), ``/healthz`` and the JSON access log."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from opstools import OpsClient
from regtools import push_blob, push_image

from lamina.registry.metrics import Metrics, render


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        if base != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


async def test_metrics_count_requests_bytes_uploads_and_storage(make_ops_client: OpsClient) -> None:
    client = await make_ops_client()
    await push_image(client, "m/app", "v1", layers=[b"x" * 5000])
    response = await client.get(f"/v2/m/app/blobs/{await push_blob(client, 'm/app', b'y' * 3000)}")
    assert response.status == 200 and len(await response.read()) == 3000
    assert (await client.post("/v2/m/app/blobs/uploads/")).status == 202
    assert (await client.get("/v2/m/app/manifests/nope")).status == 404
    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert "# TYPE lamina_http_requests_total counter" in text
    blob_route = "/v2/{name}/blobs/{digest}"
    assert sample(text, "lamina_http_requests_total", route=blob_route, method="GET", status="200") == 1
    assert sample(text, "lamina_http_requests_total", route="/v2/{name}/manifests/{reference}", status="404") == 1
    assert sample(text, "lamina_http_response_bytes_total", route=blob_route) >= 3000
    assert sample(text, "lamina_http_request_bytes_total", route="/v2/{name}/blobs/uploads/") >= 8000
    assert sample(text, "lamina_upload_sessions_started_total") == 1
    assert sample(text, "lamina_upload_sessions_open") == 1
    assert sample(text, "lamina_storage_bytes") >= 8000
    assert sample(text, "lamina_repositories") == 1 and sample(text, "lamina_manifests") == 1
    assert sample(text, "lamina_gc_runs_total") == 0


def test_counters_of_other_live_workers_are_summed_and_dead_ones_dropped(tmp_path: Path) -> None:
    import os

    directory = tmp_path / "metrics"
    mine = Metrics(directory)
    mine.inc("lamina_gc_runs_total", 2)
    directory.mkdir(exist_ok=True)
    rows = [["lamina_gc_runs_total", [], 3.0]]
    (directory / f"{os.getppid()}.json").write_text(json.dumps(rows))  # a live process
    (directory / "999999999.json").write_text(json.dumps(rows))  # no such process
    text = render(mine.merged(), {})
    assert sample(text, "lamina_gc_runs_total") == 5
    assert not (directory / "999999999.json").exists()


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

"""``/metrics`` of a real ``lamina registry serve`` with several ``SO_REUSEPORT`` workers: whichever worker
answers, the figures are the sum over the workers (prometheus_client's multiprocess files in
``ROOT/run/metrics``), and a worker that is gone leaves no gauge behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from helpers.registries import RegistryProcess

MANIFEST_ROUTE = "/v2/{name}/manifests/{reference}"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
GET_2XX = {"method": "GET", "route": MANIFEST_ROUTE, "status_class": "2xx"}


def sample(text: str, name: str, **labels: str) -> float:
    found = [s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{len(found)} samples {name} {labels} in:\n{text}"
    return found[0]


def scrape(server: RegistryProcess) -> str:
    response = requests.get(f"{server.url}/metrics", timeout=30)  # a new connection: any worker may answer
    assert response.status_code == 200, response.text
    return response.text


def push_manifest(server: RegistryProcess, name: str, tag: str) -> None:
    blobs = {"application/vnd.oci.image.config.v1+json": b'{"architecture":"amd64","os":"linux"}',
             "application/vnd.oci.image.layer.v1.tar": os.urandom(512)}
    descriptors = []
    for media_type, data in blobs.items():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        done = requests.post(f"{server.url}/v2/{name}/blobs/uploads/", params={"digest": digest}, data=data,
                             timeout=30)
        assert done.status_code == 201, done.text
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(data)})
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptors[0], "layers": descriptors[1:]}
    done = requests.put(f"{server.url}/v2/{name}/manifests/{tag}", data=json.dumps(manifest).encode(),
                        headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert done.status_code == 201, done.text


def worker_pids(server: RegistryProcess) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wait_for(server: RegistryProcess, name: str, value: float, timeout: float = 20.0) -> str:
    """Scrape until ``name`` is ``value`` (a worker's exit is seen by the supervisor a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = scrape(server)
        except requests.ConnectionError:  # queued on the worker that just died: reset
            if time.monotonic() > deadline:
                raise
            continue
        if sample(text, name) == value or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_histogram_counts_are_summed_across_two_workers(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry(workers=2)
    push_manifest(server, "w/app", "v1")
    gets = 40
    for _ in range(gets):  # each on a new connection: the kernel spreads them over both workers
        got = requests.get(f"{server.url}/v2/w/app/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert got.status_code == 200
    # Each worker's own share, read from its own file with prometheus_client's merge: both served some.
    shares = []
    for path in sorted((server.root / "run" / "metrics").glob("histogram_*.db")):
        for family in MultiProcessCollector.merge([str(path)]):
            shares += [s.value for s in family.samples if s.name == "lamina_http_request_duration_seconds_count"
                       and GET_2XX.items() <= s.labels.items()]
    assert len(shares) == 2 and all(shares) and sum(shares) == gets, shares
    for _ in range(6):  # whichever worker answers, it answers with the sum
        text = scrape(server)
        assert sample(text, "lamina_http_request_duration_seconds_count", **GET_2XX) == gets
        assert sample(text, "lamina_http_request_duration_seconds_bucket", le="+Inf", **GET_2XX) == gets
        assert sample(text, "lamina_http_requests_total", route=MANIFEST_ROUTE, method="GET", status="200") == gets
        assert sample(text, "lamina_workers") == 2


def test_workers_that_are_gone_leave_no_gauge(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry(workers=3)
    push_manifest(server, "w/app", "v1")
    text = scrape(server)
    assert sample(text, "lamina_workers") == 3 and sample(text, "lamina_repositories") == 1
    first, second, _third = worker_pids(server)
    # A worker stopped (SIGTERM): the supervisor sees it exit and drops its gauges; its counters stay.
    os.kill(first, signal.SIGTERM)
    text = wait_for(server, "lamina_workers", 2)
    assert sample(text, "lamina_workers") == 2
    assert sample(text, "lamina_http_requests_total", route=MANIFEST_ROUTE, method="PUT", status="201") == 1
    # A worker killed with no supervisor left to see it (SIGKILL to both): the next scrape drops its gauges.
    assert server.process is not None
    group = server.process.pid  # the server runs in its own session: its pid is the workers' group
    try:
        os.kill(group, signal.SIGKILL)
        os.kill(second, signal.SIGKILL)
        text = wait_for(server, "lamina_workers", 1)
        assert sample(text, "lamina_workers") == 1
        assert sample(text, "lamina_repositories") == 1 and sample(text, "lamina_manifests") == 1  # no copies
        assert sample(text, "lamina_http_requests_total", route=MANIFEST_ROUTE, method="PUT", status="201") == 1
    finally:  # the orphaned last worker: the fixture's stop() sees the supervisor gone and does nothing
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

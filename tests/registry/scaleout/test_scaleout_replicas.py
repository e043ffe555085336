"""The issue's "Done means" for stateless replicas, on PostgreSQL + a real Ceph RGW with two
``lamina registry serve`` processes on different ports (tests/registry/scaleout/conftest.py): the OCI
conformance replay against one replica while pushes go through the other, a chunked upload crossing
replicas, a replica killed with SIGKILL mid-upload, and GC on one replica during pushes through the other."""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
import time
import uuid

import requests
from scaletools import PushRefused, image_manifest, manifests_missing_blobs, push_image, sha256
from test_registry_conformance import Registry, Run, SuiteData

from helpers.registries import RegistryProcess

MiB = 1 << 20
OCTET = {"Content-Type": "application/octet-stream"}


class Pusher(threading.Thread):
    """Pushes small images through one replica until stopped; remembers what was pushed and what failed."""

    def __init__(self, replica: RegistryProcess, name: str, tags: int | None = None) -> None:
        super().__init__(daemon=True)
        self.replica, self.name, self.tags = replica, name, tags
        self.stop = threading.Event()
        self.pushed: list[tuple[str, str]] = []  # (tag, digest)
        self.refused: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        shared = b"shared layer " * 100
        count = 0
        while not self.stop.is_set():
            tag = f"t{count % self.tags if self.tags else count}"
            try:
                digest = push_image(self.replica.url, self.name, tag, [shared, os.urandom(4096)])
                self.pushed.append((tag, digest))
            except PushRefused as exc:  # refused (a GC race), never stored broken: the client retries
                self.refused.append(str(exc))
            except BaseException as exc:
                self.errors.append(exc)
                return
            count += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        assert not self.errors, self.errors


def test_conformance_on_one_replica_while_pushes_go_through_the_other(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    a, b = cluster.replicas
    pusher = Pusher(b, "scaleout/background")
    pusher.start()
    try:
        suffix = uuid.uuid4().hex[:8]
        registry = Registry("127.0.0.1", a.port, f"conformance/{suffix}")
        run = Run(registry, SuiteData(), f"crossmount/{suffix}", True, True)
        run.pull()
        run.push()
        run.discovery()
        run.management()
    finally:
        pusher.finish()
    assert not pusher.refused, pusher.refused[:3]
    assert len(pusher.pushed) >= 5, pusher.pushed
    for tag, digest in pusher.pushed[-5:]:  # everything pushed through B is served by A
        got = requests.get(f"{a.url}/v2/scaleout/background/manifests/{tag}", timeout=10,
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == digest
    checked, problems = manifests_missing_blobs(cluster.metadata, a.url)
    assert checked >= 5 and not problems, problems


def test_chunked_upload_started_on_one_replica_finishes_on_the_other(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """POST and PATCH on A, PATCH and the closing PUT on B, the manifest on A: the digest B checks is the
    SHA-256 state A saved in the bucket, the session A recorded in PostgreSQL."""
    cluster = make_cluster()
    a, b = cluster.replicas
    data = os.urandom(7 * MiB + 333)
    cut1, cut2 = 6 * MiB + 1, 7 * MiB
    started = requests.post(f"{a.url}/v2/scaleout/chunked/blobs/uploads/", timeout=10)
    assert started.status_code == 202
    location = started.headers["Location"]

    def patch(server: RegistryProcess, first: int, last: int) -> requests.Response:
        return requests.patch(server.url + location, data=data[first:last], timeout=60,
                              headers={**OCTET, "Content-Range": f"{first}-{last - 1}"})

    assert patch(a, 0, cut1).headers["Range"] == f"0-{cut1 - 1}"
    status = requests.get(b.url + location, timeout=10)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{cut1 - 1}"
    assert patch(b, cut1, cut2).headers["Range"] == f"0-{cut2 - 1}"
    finished = requests.put(f"{b.url}{location}?digest={sha256(data)}", data=data[cut2:], timeout=60, headers=OCTET)
    assert finished.status_code == 201, finished.text
    config = b'{"architecture":"amd64","os":"linux"}'
    assert requests.post(f"{b.url}/v2/scaleout/chunked/blobs/uploads/?digest={sha256(config)}", data=config,
                         headers=OCTET, timeout=10).status_code == 201
    manifest = image_manifest(config, [data])
    put = requests.put(f"{a.url}/v2/scaleout/chunked/manifests/v1", data=manifest, timeout=10,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert put.status_code == 201, put.text
    for server in (a, b):
        got = requests.get(f"{server.url}/v2/scaleout/chunked/blobs/{sha256(data)}", timeout=60)
        assert got.status_code == 200 and got.content == data
    assert requests.get(b.url + location, timeout=10).status_code == 404  # the session is over everywhere


def test_replica_killed_mid_upload_loses_nothing_committed(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A replica SIGKILLed while a PATCH streams into it: the other serves everything committed, and the
    upload resumes there from the last chunk the dead replica finished."""
    cluster = make_cluster()
    a, b = cluster.replicas
    committed = push_image(a.url, "scaleout/kill", "before", [os.urandom(100_000)])
    started = requests.post(f"{a.url}/v2/scaleout/kill/blobs/uploads/", timeout=10)
    location = started.headers["Location"]
    blob = os.urandom(12 * MiB)
    first = requests.patch(a.url + location, data=blob[:MiB], headers={**OCTET, "Content-Range": f"0-{MiB - 1}"},
                           timeout=30)
    assert first.status_code == 202
    # a second PATCH streams into A; A dies (SIGKILL, its whole process group) halfway through the body
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    conn.putrequest("PATCH", location)
    for key, value in {**OCTET, "Content-Range": f"{MiB}-{12 * MiB - 1}", "Content-Length": str(11 * MiB)}.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(blob[MiB:6 * MiB])
    time.sleep(0.3)
    assert a.process is not None
    os.killpg(a.process.pid, signal.SIGKILL)
    a.process.wait(10)
    conn.close()
    # B serves everything committed; the session stands where its last finished request left it
    got = requests.get(f"{b.url}/v2/scaleout/kill/manifests/before", timeout=10,
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert got.status_code == 200 and sha256(got.content) == committed
    status = requests.get(b.url + location, timeout=10)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{MiB - 1}", status.headers
    # the push continues on B where the session stands (the dead worker's lock is taken over: its process
    # is gone), and the digest B checks covers A's first chunk and B's rest
    rest = requests.patch(b.url + location, data=blob[MiB:], timeout=60,
                          headers={**OCTET, "Content-Range": f"{MiB}-{len(blob) - 1}"})
    assert rest.status_code == 202 and rest.headers["Range"] == f"0-{len(blob) - 1}", rest.text
    closed = requests.put(f"{b.url}{location}?digest={sha256(blob)}", timeout=60)
    assert closed.status_code == 201, closed.text
    assert requests.head(f"{b.url}/v2/scaleout/kill/blobs/{sha256(blob)}", timeout=10).status_code == 200
    after = push_image(b.url, "scaleout/kill", "after", [blob])
    a.start()  # A comes back and serves both
    for tag, digest in (("before", committed), ("after", after)):
        got = requests.get(f"{a.url}/v2/scaleout/kill/manifests/{tag}", timeout=10,
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert got.status_code == 200 and sha256(got.content) == digest
    checked, problems = manifests_missing_blobs(cluster.metadata, a.url)
    assert checked == 2 and not problems, problems


def _metric(replica: RegistryProcess, name: str) -> float:
    text = requests.get(f"{replica.url}/metrics", timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_gc_on_one_replica_during_pushes_through_the_other(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Replica A collects every 0.3 s (untagged manifests too, a 1 s grace) while B moves three tags
    over and over (each move leaves an untagged manifest and its own layer behind for A to delete). A
    push may be refused when GC took a blob between its upload and its manifest (the client pushes
    again); no manifest that was stored may miss a blob."""
    cluster = make_cluster(replicas=0)
    a = cluster.start_replica("[gc]\ngrace_seconds = 1\ninterval_seconds = 0.3\ndelete_untagged = true\n")
    b = cluster.start_replica()
    pushers = [Pusher(b, f"scaleout/gc{n}", tags=3) for n in range(2)]
    for pusher in pushers:
        pusher.start()
    time.sleep(5)
    for pusher in pushers:
        pusher.finish()
    assert all(len(p.pushed) >= 6 for p in pushers), [len(p.pushed) for p in pushers]
    deadline = time.monotonic() + 20
    while _metric(a, "lamina_gc_blobs_deleted_total") == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _metric(a, "lamina_gc_blobs_deleted_total") > 0  # GC ran, concurrently, and deleted garbage
    a.stop()  # no collection between the check's snapshot and its reads (it would delete untagged manifests)
    checked, problems = manifests_missing_blobs(cluster.metadata, b.url)
    assert checked >= 6 and not problems, problems
    for pusher in pushers:  # the three tags point at the last push of each
        last = {tag: digest for tag, digest in pusher.pushed}
        for tag, digest in last.items():
            got = requests.get(f"{b.url}/v2/{pusher.name}/manifests/{tag}", timeout=10,
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert got.status_code == 200 and sha256(got.content) == digest

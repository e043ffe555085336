"""``lamina registry serve`` with ``blobs = "s3://..."`` on a real Ceph RADOS Gateway
(scripts/services/ceph-rgw.sh via tests/helpers/ceph.py): skopeo pushes and pulls through presigned
redirects, a chunked upload continues on a second replica, GET streams when ``redirect=false``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from helpers.binaries import require_binary
from helpers.ceph import CephRgw, s3_url
from helpers.images import busybox_image
from helpers.registries import RegistryProcess, start_lamina
from lamina.client import RegistryClient
from lamina.client.blobs import PushOutcome
from lamina.oci import parse_digest
from lamina.store.s3blobs import S3BlobStore
from lamina.store.s3client import S3Client, parse_s3_url

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Replicas:
    """Two registry processes on different ports serving one registry: one root (SQLite metadata; the
    second replica's root is a symlink to the first's) and one S3 prefix (``blobs``)."""

    a: RegistryProcess
    b: RegistryProcess
    blobs: str

    def __iter__(self) -> Iterator[RegistryProcess]:
        return iter((self.a, self.b))


def _start_replicas(workdir: Path, blobs: str) -> Iterator[Replicas]:
    config = f'blobs = "{blobs}"\nworkers = 1\n'
    first = start_lamina(workdir / "a", config=config)
    try:
        (workdir / "b").mkdir()
        (workdir / "b" / "root").symlink_to(first.root)
        second = start_lamina(workdir / "b", config=config)
        try:
            yield Replicas(first, second, blobs)
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, ceph_rgw: CephRgw) -> Iterator[Replicas]:
    """Replicas that answer a blob GET with a redirect to a presigned URL (the default)."""
    workdir = tmp_path_factory.mktemp("s3-replicas")
    yield from _start_replicas(workdir, s3_url(ceph_rgw, workdir))


@pytest.fixture(scope="module")
def streaming_replicas(tmp_path_factory: pytest.TempPathFactory, ceph_rgw: CephRgw) -> Iterator[Replicas]:
    """Replicas with ``redirect=false``: blobs stream through the registry."""
    workdir = tmp_path_factory.mktemp("s3-streaming")
    yield from _start_replicas(workdir, s3_url(ceph_rgw, workdir, redirect=False))


def test_skopeo_push_and_pull_through_presigned_redirects(
    replicas: Replicas, ceph_rgw: CephRgw, tmp_path: Path, busybox_rootfs: Path
) -> None:
    require_binary("skopeo", "skopeo")
    pushed = busybox_image(replicas.a, name="s3/busybox", rootfs=busybox_rootfs)
    layer = pushed.image.layers[0]
    # the bytes are in the bucket, not under the root
    assert S3BlobStore(S3Client(parse_s3_url(replicas.blobs))).size(parse_digest(layer.digest)) == layer.size
    assert not (replicas.a.root / "blobs" / "sha256").exists() or not any((replicas.a.root / "blobs").rglob("*/*"))
    head = requests.head(f"{replicas.b.url}/v2/s3/busybox/blobs/{layer.digest}", timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(layer.size)
    get = requests.get(f"{replicas.b.url}/v2/s3/busybox/blobs/{layer.digest}", allow_redirects=False, timeout=10)
    assert get.status_code == 307
    assert get.headers["Location"].startswith(ceph_rgw.endpoint + "/")
    assert hashlib.sha256(requests.get(get.headers["Location"], timeout=10).content).hexdigest() == layer.digest[7:]
    # skopeo pulls from the other replica, following each blob redirect to the gateway
    out = tmp_path / "pulled"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{replicas.b.host}/s3/busybox:latest", f"oci:{out}:x"],
        check=True, capture_output=True, timeout=120,
    )
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == pushed.digest
    assert (out / "blobs" / "sha256" / layer.digest[7:]).read_bytes() == layer.data


def test_chunked_upload_started_on_one_replica_finishes_on_the_other(replicas: Replicas) -> None:
    """POST and the first PATCH on replica A (one full S3 part and a tail), the second PATCH on B (which
    resumes A's saved SHA-256 state and tail), PUT on A: the digest checks out with no read-back."""
    a, b = replicas
    data = os.urandom(17 * MiB + 12345)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    cut1, cut2 = 9 * MiB + 7, 16 * MiB + 3
    started = requests.post(f"{a.url}/v2/s3/chunked/blobs/uploads/", timeout=10)
    assert started.status_code == 202
    location = started.headers["Location"]

    def patch(server: RegistryProcess, first: int, last: int) -> requests.Response:
        return requests.patch(
            server.url + location, data=data[first:last], timeout=60,
            headers={"Content-Type": "application/octet-stream", "Content-Range": f"{first}-{last - 1}"},
        )

    assert patch(a, 0, cut1).headers["Range"] == f"0-{cut1 - 1}"
    assert requests.get(b.url + location, timeout=10).headers["Range"] == f"0-{cut1 - 1}"  # B sees A's bytes
    assert patch(b, 0, 10).status_code == 416  # out of order on the other replica too
    assert patch(b, cut1, cut2).headers["Range"] == f"0-{cut2 - 1}"
    wrong = requests.put(f"{a.url}{location}?digest=sha256:{'0' * 64}", timeout=60)
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
    finished = requests.put(
        f"{a.url}{location}?digest={digest}", data=data[cut2:], timeout=60,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert finished.status_code == 201, finished.text
    got = requests.get(f"{b.url}/v2/s3/chunked/blobs/{digest}", timeout=60)  # follows the redirect
    assert got.status_code == 200 and got.content == data


def test_without_redirect_blobs_stream_through_the_registry(streaming_replicas: Replicas) -> None:
    a, b = streaming_replicas
    data = os.urandom(3 * MiB + 1)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    pushed = requests.post(f"{a.url}/v2/s3/streamed/blobs/uploads/?digest={digest}", data=data, timeout=60,
                           headers={"Content-Type": "application/octet-stream"})
    assert pushed.status_code == 201, pushed.text
    whole = requests.get(f"{b.url}/v2/s3/streamed/blobs/{digest}", allow_redirects=False, timeout=60)
    assert whole.status_code == 200 and whole.content == data
    part = requests.get(f"{b.url}/v2/s3/streamed/blobs/{digest}", headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    missing = requests.get(f"{b.url}/v2/s3/streamed/blobs/sha256:{'1' * 64}", timeout=10)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_lamina_client_pushes_in_chunks_and_pulls_through_the_other_replica(
    replicas: Replicas, tmp_path: Path
) -> None:
    """lamina's own client: a 13 MiB layer pushed from a file in 6 MiB PATCHes (S3 parts plus tails),
    a config and a manifest; the other replica serves them, the layer through a redirect to the gateway."""
    a, b = replicas
    layer = os.urandom(13 * MiB + 99)
    layer_path = tmp_path / "layer.bin"
    layer_path.write_bytes(layer)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer)}],
    }).encode()
    async with RegistryClient(a.host, monolithic_limit=1 * MiB, chunk_size=6 * MiB) as client:
        assert await client.push_blob("s3/client", layer_digest, len(layer), layer_path) == PushOutcome.UPLOADED
        assert await client.push_blob("s3/client", config_digest, len(config), config) == PushOutcome.UPLOADED
        pushed = await client.put_manifest("s3/client", "v1", manifest, OCI_MANIFEST)
    async with RegistryClient(b.host) as client:
        assert await client.head_blob("s3/client", layer_digest) == len(layer)
        got = b"".join([chunk async for chunk in client.get_blob("s3/client", layer_digest, size=len(layer))])
        assert got == layer
        assert await client.fetch_blob("s3/client", config_digest) == config
        fetched = await client.get_manifest("s3/client", "v1")
        assert str(fetched.digest) == str(pushed)


async def test_the_janitor_expires_s3_sessions_and_orphans(make_client, ceph_rgw: CephRgw, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Abandoned sessions go with their S3 objects and multipart upload; objects of a session metadata no
    longer knows go once they are as old (their newest LastModified)."""
    from lamina.registry.janitor import expire_uploads
    from lamina.registry.services import STORAGE

    client = await make_client(blobs=s3_url(ceph_rgw, tmp_path))
    start = await client.post("/v2/app/blobs/uploads/")
    location = start.headers["Location"]
    session = start.headers["Docker-Upload-UUID"]
    patched = await client.patch(location, data=os.urandom(9 * MiB))  # one part sent, a tail kept
    assert patched.status == 202
    storage = client.server.app[STORAGE]
    s3 = ceph_rgw.client()
    location_s3 = parse_s3_url(s3_url(ceph_rgw, tmp_path))
    prefix = location_s3.key("uploads", session) + "/"
    assert s3.list_multipart_uploads(Bucket=location_s3.bucket, Prefix=prefix).get("Uploads")
    assert expire_uploads(storage, 3600) == 0
    assert expire_uploads(storage, 3600, now=10**10) == 1
    assert (await client.get(location)).status == 404
    assert not s3.list_objects_v2(Bucket=location_s3.bucket, Prefix=prefix).get("Contents")
    assert not s3.list_multipart_uploads(Bucket=location_s3.bucket, Prefix=prefix).get("Uploads")
    storage.uploads.create("orphan")  # objects no session row names (a crash between the two writes)
    assert expire_uploads(storage, 3600) == 0
    assert expire_uploads(storage, 3600, now=10**10) == 1
    assert storage.uploads.current_size("orphan") is None


def test_a_replica_killed_mid_patch_loses_nothing_committed(
    tmp_path_factory: pytest.TempPathFactory, ceph_rgw: CephRgw
) -> None:
    """Replica A takes a first PATCH, then dies by SIGKILL while a second one streams in: the session
    still holds exactly the first chunk, and replica B continues it at once (the dead worker's lock is
    taken over: its process is gone from this host) and finishes the blob."""
    import http.client
    import signal
    import time

    workdir = tmp_path_factory.mktemp("s3-kill")
    pair = _start_replicas(workdir, s3_url(ceph_rgw, workdir))
    a, b = next(pair)
    try:
        data = os.urandom(20 * MiB + 5)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        cut = 9 * MiB + 1
        location = requests.post(f"{a.url}/v2/s3/killed/blobs/uploads/", timeout=10).headers["Location"]
        first = requests.patch(a.url + location, data=data[:cut], timeout=60,
                               headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{cut - 1}"})
        assert first.status_code == 202
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
        conn.putrequest("PATCH", location)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(data) - cut))
        conn.putheader("Content-Range", f"{cut}-{len(data) - 1}")
        conn.endheaders()
        conn.send(data[cut : cut + 10 * MiB])  # more than a part: S3 has some of it already
        time.sleep(1.0)
        assert a.process is not None
        os.killpg(a.process.pid, signal.SIGKILL)
        a.process.wait(10)
        conn.close()
        status = requests.get(b.url + location, timeout=10)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{cut - 1}"
        resumed = requests.patch(b.url + location, data=data[cut:], timeout=60,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Range": f"{cut}-{len(data) - 1}"})
        assert resumed.status_code == 202, resumed.text
        assert requests.put(f"{b.url}{location}?digest={digest}", timeout=60).status_code == 201
        assert requests.get(f"{b.url}/v2/s3/killed/blobs/{digest}", timeout=60).content == data
    finally:
        pair.close()

"""Online garbage collection: what goes and what stays, dry runs, the CLI, and the race with pushes
against a real ``lamina registry serve`` (two worker processes) while GC runs in a loop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from opstools import OpsClient
from regtools import descriptor, push_blob, push_image, sha256

from lamina.oci import mediatypes as mt
from lamina.registry.gc import GcBusy, GcSettings, gc_lock, run_gc
from lamina.store import open_storage

NOW_GRACE = GcSettings(grace_seconds=0.0)


async def test_gc_deletes_what_no_manifest_references_and_keeps_the_rest(make_ops_client: OpsClient,
                                                                        tmp_path: Path) -> None:
    client = await make_ops_client(root=tmp_path / "root")
    await push_image(client, "a/app", "v1", layers=[b"shared base", b"app v1"])
    _, old = await push_image(client, "a/app", "v0", layers=[b"shared base", b"app v0"])
    await push_image(client, "b/other", "v1", layers=[b"shared base", b"other"])
    junk = await push_blob(client, "a/app", b"uploaded, never referenced")
    assert (await client.delete(f"/v2/a/app/manifests/{old}")).status == 202
    storage = open_storage(tmp_path / "root")
    preview = run_gc(storage, NOW_GRACE, dry_run=True)
    gone = {sha256(b"app v0"), junk}
    assert {d for d, _ in preview.blobs} == gone
    assert preview.bytes_freed == len(b"app v0") + len(b"uploaded, never referenced")
    assert (await client.head(f"/v2/a/app/blobs/{junk}")).status == 200  # a dry run changes nothing
    result = run_gc(storage, NOW_GRACE)
    assert {d for d, _ in result.blobs} == gone
    for digest in gone:
        assert (await client.head(f"/v2/a/app/blobs/{digest}")).status == 404
    for name, layer in (("a/app", b"shared base"), ("a/app", b"app v1"), ("b/other", b"other")):
        response = await client.get(f"/v2/{name}/blobs/{sha256(layer)}")
        assert response.status == 200 and await response.read() == layer


async def test_gc_keeps_index_children_and_legacy_cache_blobs(make_ops_client: OpsClient, tmp_path: Path) -> None:
    client = await make_ops_client(root=tmp_path / "root")
    child, child_digest = await push_image(client, "a/multi", None, layers=[b"arm64 layer"])
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {**descriptor(child, mt.OCI_MANIFEST), "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()
    response = await client.put("/v2/a/multi/manifests/latest", data=index, headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 201
    layer = await push_blob(client, "a/cache", b"legacy cache layer")
    cache_config = await push_blob(client, "a/cache", b'{"layers":[],"records":[]}')
    legacy = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        descriptor(b"legacy cache layer", mt.OCI_LAYER_GZIP),
        descriptor(b'{"layers":[],"records":[]}', mt.BUILDKIT_CACHE_CONFIG)]}).encode()
    response = await client.put("/v2/a/cache/manifests/cache", data=legacy, headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 201, await response.text()
    storage = open_storage(tmp_path / "root")
    result = run_gc(storage, GcSettings(grace_seconds=0.0, delete_untagged=True))
    assert result.blobs == [] and result.untagged == []
    assert (await client.head(f"/v2/a/multi/manifests/{child_digest}")).status == 200
    for digest in (layer, cache_config):
        assert (await client.head(f"/v2/a/cache/blobs/{digest}")).status == 200


async def test_recent_uploads_are_protected_by_the_grace_period(make_ops_client: OpsClient, tmp_path: Path) -> None:
    client = await make_ops_client(root=tmp_path / "root")
    layer = await push_blob(client, "a/app", b"pushed, manifest not yet")
    storage = open_storage(tmp_path / "root")
    result = run_gc(storage, GcSettings(grace_seconds=3600))
    assert result.blobs == [] and result.links == []
    await push_image(client, "a/app", "v1", layers=[b"pushed, manifest not yet"])
    assert (await client.head(f"/v2/a/app/blobs/{layer}")).status == 200


def test_one_gc_at_a_time(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    with gc_lock(storage), pytest.raises(GcBusy, match="another garbage collection"):
        run_gc(storage, NOW_GRACE)


async def test_gc_cli_dry_run_reports_bytes_and_real_run_deletes(make_ops_client: OpsClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root)
    junk = await push_blob(client, "a/app", b"x" * 1000)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lamina.cli", "registry", "gc", "--root", str(root), *args],
                              capture_output=True, text=True, timeout=60)

    dry = cli("--dry-run", "--grace", "0")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete blob {junk} (1000 bytes)" in dry.stdout and "1000 bytes would be freed" in dry.stdout
    assert (await client.head(f"/v2/a/app/blobs/{junk}")).status == 200
    kept = cli("--dry-run")  # default grace (1 h): nothing yet
    assert "0 blob(s)" in kept.stdout
    real = cli("--grace", "0")
    assert real.returncode == 0 and "1000 bytes freed" in real.stdout
    assert (await client.head(f"/v2/a/app/blobs/{junk}")).status == 404
    bad = cli("--grace", "-1")
    assert bad.returncode == 2 and "--grace" in bad.stderr


async def _push_with_retry(session: aiohttp.ClientSession, name: str, tag: str, layers: list[bytes],
                           outcomes: dict[str, int]) -> None:
    """Push blobs then the manifest; when GC wins a race (MANIFEST_BLOB_UNKNOWN for the manifest, or
    BLOB_UPLOAD_INVALID for a blob collected between its commit and its link) push everything again."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": descriptor(config, mt.OCI_CONFIG),
                           "layers": [descriptor(layer, mt.OCI_LAYER_GZIP) for layer in layers]}).encode()
    for _attempt in range(40):
        uploaded = True
        for blob in (config, *layers):
            async with session.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(blob)}, data=blob) as r:
                if r.status != 201:  # GC removed the (old, unlinked) file between our commit and link: retry
                    body = await r.json()
                    assert r.status == 400 and body["errors"][0]["code"] == "BLOB_UPLOAD_INVALID", body
                    outcomes["upload_retry"] += 1
                    uploaded = False
        if not uploaded:
            continue
        async with session.put(f"/v2/{name}/manifests/{tag}", data=manifest,
                               headers={"Content-Type": mt.OCI_MANIFEST}) as response:
            if response.status == 201:
                outcomes["ok"] += 1
                return
            body = await response.json()
            assert response.status == 400 and body["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", body
            outcomes["blob_unknown"] += 1
    raise AssertionError(f"{name}:{tag} never got pushed")


@pytest.mark.slow
async def test_gc_racing_concurrent_pushers_never_loses_a_referenced_blob(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry(workers=2)
    storage = open_storage(server.root)
    stop = threading.Event()
    runs = [0]
    freed = [0]

    def gc_loop() -> None:
        settings = GcSettings(grace_seconds=0.05, delete_untagged=True)
        while not stop.is_set():
            try:
                freed[0] += len(run_gc(storage, settings).blobs)
                runs[0] += 1
            except GcBusy:
                pass

    shared = [hashlib.sha256(str(i).encode()).digest() * 64 for i in range(4)]
    junk: list[str] = []
    outcomes = {"ok": 0, "blob_unknown": 0, "upload_retry": 0}
    collector = threading.Thread(target=gc_loop)
    collector.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as session:

            async def pusher(p: int) -> None:
                for i in range(10):
                    unique = os.urandom(512)
                    await _push_with_retry(session, f"race/p{p}", f"t{i}", [shared[(p + i) % 4], unique], outcomes)
                    blob = os.urandom(256)  # uploaded, never referenced: must be gone at the end
                    junk.append(sha256(blob))
                    async with session.post(f"/v2/race/p{p}/blobs/uploads/", params={"digest": sha256(blob)},
                                            data=blob) as r:
                        assert r.status in (201, 400)  # 400: collected before it was even linked

            await asyncio.gather(*(pusher(p) for p in range(6)))
    finally:
        stop.set()
        collector.join()
    assert runs[0] >= 3 and outcomes["ok"] == 60, outcomes
    final = run_gc(storage, GcSettings(grace_seconds=0.0, delete_untagged=True))
    assert final.untagged == []  # every pushed image is tagged
    async with aiohttp.ClientSession(base_url=server.url) as session:
        referenced: set[str] = set()
        for p in range(6):
            for i in range(10):
                async with session.get(f"/v2/race/p{p}/manifests/t{i}",
                                       headers={"Accept": mt.OCI_MANIFEST}) as response:
                    assert response.status == 200
                    doc = json.loads(await response.read())
                for d in (doc["config"], *doc["layers"]):
                    async with session.get(f"/v2/race/p{p}/blobs/{d['digest']}") as blob:
                        assert blob.status == 200, (p, i, d)
                        assert sha256(await blob.read()) == d["digest"]
                    referenced.add(d["digest"])
        for digest in junk:
            assert digest not in referenced
    on_disk = {str(d) for d in storage.blobs.iter_digests()}
    assert on_disk == referenced, (len(on_disk - referenced), len(referenced - on_disk))
    assert sum(len(storage.metadata.manifest_infos(f"race/p{p}")) for p in range(6)) == 60

"""fsck next to a running ``lamina registry serve`` (two worker processes, uvloop, sendfile): read-only
runs while pushes and garbage collections go on report no false problems; ``--repair`` waits for GC's
lock; verification on read answers a flipped byte with 404 on the zero-copy path too."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
from regtools import descriptor, sha256

from lamina.oci import mediatypes as mt
from lamina.oci import parse_digest
from lamina.registry.gc import gc_lock
from lamina.store import StorePaths, open_storage


def cli(root: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lamina.cli", "registry", command, "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120)


async def push(session: aiohttp.ClientSession, name: str, tag: str, layers: list[bytes], seen: Counter[str]) -> None:
    """Blobs then the manifest; pushed again when a concurrent GC collected a blob before the manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": descriptor(config, mt.OCI_CONFIG),
                           "layers": [descriptor(layer, mt.OCI_LAYER_GZIP) for layer in layers]}).encode()
    for _ in range(40):
        for blob in (config, *layers):
            async with session.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(blob)}, data=blob) as r:
                seen[f"blob {r.status}"] += 1
        async with session.put(f"/v2/{name}/manifests/{tag}", data=manifest,
                               headers={"Content-Type": mt.OCI_MANIFEST}) as response:
            seen[f"manifest {response.status}"] += 1
            if response.status == 201:
                return
    raise AssertionError(f"{name}:{tag} never got pushed: {seen}")


async def test_read_only_fsck_beside_pushes_and_gc_finds_nothing(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry('verify_on_read = "first"\n', workers=2)
    results: list[subprocess.CompletedProcess[str]] = []
    stop = threading.Event()

    def checker() -> None:
        while not stop.is_set():
            results.append(cli(server.root, "fsck", "--json"))
            cli(server.root, "gc", "--grace", "0", "--delete-untagged")

    thread = threading.Thread(target=checker)
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession(server.url) as session:
        thread.start()
        try:
            deadline = time.monotonic() + 3
            round_ = 0
            while time.monotonic() < deadline or len(results) < 2:
                await asyncio.gather(*(
                    push(session, f"team/app{n}", f"r{round_}", [b"shared base", f"{n}-{round_}".encode() * 500], seen)
                    for n in range(4)))
                round_ += 1
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
    assert results and seen["manifest 201"] >= 8
    for result in results:
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["clean"], report["problems"]


async def test_zero_copy_get_of_a_flipped_blob_is_404_then_fsck_repair_waits_for_gc(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry(workers=2)  # verify_on_read: the default
    layer = b"a layer served by sendfile " * 4096
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession(server.url) as session:
        await push(session, "team/app", "v1", [layer], seen)
        digest = sha256(layer)
        path = StorePaths(server.root).blob(parse_digest(digest))
        path.chmod(0o600)
        with path.open("r+b") as f:
            f.seek(5000)
            f.write(b"X")
        async with session.get(f"/v2/team/app/blobs/{digest}") as response:
            assert response.status == 404
            assert (await response.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert "failed verification on read" in server.stderr_text()
        # the blob is quarantined; fsck --repair now finds the manifest missing its layer, waiting for GC first
        storage = open_storage(server.root)
        progress = server.root.parent / "fsck-progress.txt"
        with gc_lock(storage), progress.open("w") as stderr:
            repair = subprocess.Popen(
                [sys.executable, "-m", "lamina.cli", "registry", "fsck", "--root", str(server.root), "--repair"],
                stdout=subprocess.PIPE, stderr=stderr, text=True)
            for _ in range(300):
                if "waiting" in progress.read_text() or repair.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            assert progress.read_text() == "fsck: waiting for the running garbage collection to finish\n"
            assert repair.poll() is None
        out, _ = repair.communicate(timeout=60)
        storage.close()
        assert repair.returncode == 1 and f"missing-blob {digest}: no blob file" in out
        assert "team/app@" in out and "(tags: v1)" in out
        await push(session, "team/app", "v1", [layer], seen)  # a client pushes again: healed
        async with session.get(f"/v2/team/app/blobs/{digest}") as response:
            assert response.status == 200 and await response.read() == layer
    assert cli(server.root, "fsck").returncode == 0

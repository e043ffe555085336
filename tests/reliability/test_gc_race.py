"""GC and lifecycle in a loop while 1,000 small images are pushed to a real ``lamina registry serve``.

The pushes share base layers and move a few tags per repository over and over, so GC (grace 0.2 s,
untagged manifests deleted) and the lifecycle rules (keep the 3 newest tagged images, untagged ones
expire at once) always have something to delete while blobs are being linked and manifests put. A push
that GC raced answers ``MANIFEST_BLOB_UNKNOWN`` or ``BLOB_UPLOAD_INVALID`` and is pushed again, as a
client would. The run is bounded in time; at the end no manifest (tagged or not) lacks a blob, and every
tag the API lists reads back and verifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from pushers import Ledger, PushRefused, push_image
from walk import walk_api, walk_root

from helpers.registries import start_lamina
from lamina.registry.gc import GcBusy, GcSettings, run_gc
from lamina.registry.lifecycle import LifecycleRule, LifecycleSettings, apply_lifecycle
from lamina.store import open_storage

pytestmark = [pytest.mark.slow]

PUSHES = 1000
CLIENTS = 25
TIME_BOUND_S = 90.0
RETRYABLE = {"MANIFEST_BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UNKNOWN"}
BASES = [hashlib.sha256(str(i).encode()).digest() * 32 for i in range(6)]  # 1 KiB base layers shared by all


def _collector(root: Path, stop: threading.Event, runs: dict[str, int]) -> None:
    storage = open_storage(root)
    gc = GcSettings(grace_seconds=0.2, delete_untagged=True)
    rules = LifecycleSettings(rules=(LifecycleRule(repositories=("**",), untagged_older_than_days=0.0,
                                                   keep_last_tagged=3),))
    while not stop.is_set():
        try:
            runs["gc_blobs"] += len(run_gc(storage, gc).blobs)
            runs["gc"] += 1
        except GcBusy:
            pass
        result = apply_lifecycle(storage, rules)
        runs["lifecycle"] += 1
        runs["expired"] += len(result.expired)
        stop.wait(0.05)  # leave the database's write lock to the pushes now and then


async def _push_all(base: str, deadline: float) -> tuple[Ledger, dict[str, int]]:
    ledger = Ledger()
    outcomes = {"ok": 0, "retried": 0}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(PUSHES):
        queue.put_nowait(i)

    async def client() -> None:
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=30)) as http:
            while not queue.empty() and time.monotonic() < deadline:
                i = queue.get_nowait()
                repo, tag = f"gc/r{i % 10}", f"t{i % 7}"
                layers = [BASES[i % len(BASES)], os.urandom(512)]
                while time.monotonic() < deadline:
                    try:
                        await push_image(http, repo, [tag], layers, chunked=i % 3 == 0, ledger=ledger)
                        outcomes["ok"] += 1
                        break
                    except PushRefused as exc:
                        if exc.code not in RETRYABLE:
                            raise
                        outcomes["retried"] += 1

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return ledger, outcomes


def test_gc_and_lifecycle_looping_during_1000_pushes_leave_no_manifest_without_a_blob(tmp_path: Path) -> None:
    with start_lamina(tmp_path, workers=2) as server:
        stop = threading.Event()
        runs = {"gc": 0, "gc_blobs": 0, "lifecycle": 0, "expired": 0}
        collector = threading.Thread(target=_collector, args=(server.root, stop, runs))
        collector.start()
        started = time.monotonic()
        try:
            ledger, outcomes = asyncio.run(_push_all(server.url, started + TIME_BOUND_S))
        finally:
            stop.set()
            collector.join()
        elapsed = time.monotonic() - started
        assert ledger.server_errors == []
        assert outcomes["ok"] == PUSHES, f"{outcomes['ok']} of {PUSHES} pushes in {TIME_BOUND_S} s"
        assert runs["gc"] >= 3 and runs["lifecycle"] >= 3, runs
        assert runs["expired"] > 0 and runs["gc_blobs"] > 0, runs  # they really deleted during the pushes
        disk = walk_root(server.root)
        assert disk.problems == [], "\n".join(disk.problems[:20])
        api = asyncio.run(walk_api(server.url))
        assert api.problems == [], "\n".join(api.problems[:20])
        assert 30 <= api.tags <= 70  # 10 repositories x 7 tags, the 3 newest kept by the rule at its last run
        print(f"\ngc race: {PUSHES} pushes in {elapsed:.1f} s ({outcomes['retried']} retried after GC won a race); "
              f"{runs['gc']} GC runs freed {runs['gc_blobs']} blobs, {runs['lifecycle']} lifecycle runs expired "
              f"{runs['expired']} manifests; {disk.manifests} manifests left, none lacking a blob")

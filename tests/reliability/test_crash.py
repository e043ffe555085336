"""kill -9 of a real ``lamina registry serve`` (supervisor and both workers) while 100 clients upload blobs
(monolithic and chunked) and push manifests; after a restart nothing is corrupt or half-visible.

After the restart: every acknowledged (201) blob and manifest is there (SQLite ``synchronous=FULL``, files
renamed into place before the row commits); every tag the API lists names a manifest that GETs and
verifies, whose blobs HEAD with their size and GET with their digest; every blob file on disk hashes to
its name and no manifest in the database (tagged or not) lacks a blob; an upload session cut by the crash
either resumes at no more than what was sent or is unknown (404), never a 5xx; and the registry takes
new pushes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from pushers import Ledger, PushRefused, push_image
from walk import walk_api, walk_root

from helpers.registries import start_lamina

pytestmark = [pytest.mark.slow]

CLIENTS = 100
KILL_AFTER_MANIFESTS = 60  # acknowledged manifests before the kill: the crash lands mid-traffic
KILL_DEADLINE_S = 20.0


async def _pusher(base: str, n: int, ledger: Ledger, crashed: asyncio.Event) -> None:
    repo = f"crash/r{n % 20}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base, timeout=timeout) as http:
        i = 0
        while not crashed.is_set():
            layers = [os.urandom(1024 * (8 + (n + i) % 56))]
            try:
                await push_image(http, repo, [f"c{n}-{i}", f"latest-{n % 5}"], layers, chunked=(n + i) % 2 == 0,
                                 ledger=ledger)
            except (aiohttp.ClientError, TimeoutError, PushRefused):
                if not crashed.is_set():
                    raise  # nothing may fail before the kill
                return
            i += 1


async def _crash_during_pushes(server_url: str, kill: object) -> Ledger:
    ledger = Ledger()
    crashed = asyncio.Event()
    tasks = [asyncio.create_task(_pusher(server_url, n, ledger, crashed)) for n in range(CLIENTS)]
    deadline = time.monotonic() + KILL_DEADLINE_S
    while len(ledger.acked_manifests) < KILL_AFTER_MANIFESTS * 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if any(t.done() for t in tasks):
            break  # a pusher failed before the kill: gather() below raises its error
    crashed.set()
    kill()  # type: ignore[operator]
    await asyncio.gather(*tasks)
    return ledger


async def _after_restart(base: str, ledger: Ledger) -> list[str]:
    """Acknowledged blobs HEAD with their size; cut upload sessions are unknown or hold at most what was sent."""
    problems = []
    sent: dict[str, int] = {}
    for location, size in ledger.sessions:
        path = location.split("?")[0]
        sent[path] = max(sent.get(path, 0), size)
    async with aiohttp.ClientSession(base) as http:
        for digest, (repo, size) in ledger.acked_blobs.items():
            async with http.head(f"/v2/{repo}/blobs/{digest}") as response:
                if response.status != 200 or response.headers.get("Content-Length") != str(size):
                    problems.append(f"acknowledged blob {repo}@{digest}: HTTP {response.status} "
                                    f"Content-Length {response.headers.get('Content-Length')}, want {size}")
        for path, most in sent.items():
            async with http.get(path) as response:
                if response.status == 404:
                    continue
                last = int(response.headers.get("Range", "0-0").split("-")[1])
                if response.status != 204 or last >= max(most, 1):
                    problems.append(f"GET {path}: HTTP {response.status} Range {response.headers.get('Range')}, "
                                    f"{most} bytes were sent")
    return problems


def test_kill_9_during_100_concurrent_pushes_leaves_nothing_corrupt_or_half_visible(tmp_path: Path) -> None:
    server = start_lamina(tmp_path, workers=2)
    try:
        assert server.process is not None
        process = server.process

        def kill() -> None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

        ledger = asyncio.run(_crash_during_pushes(server.url, kill))
        assert len(ledger.acked_manifests) >= KILL_AFTER_MANIFESTS, "the kill came before enough traffic"
        assert ledger.server_errors == []
        server.stop()
        server.start()

        api = asyncio.run(walk_api(server.url))
        assert api.problems == [], "\n".join(api.problems[:20])
        for (repo, tag), digest in ledger.acked_manifests.items():
            got = api.tag_digests.get((repo, tag))
            if tag.startswith("latest-"):  # a moving tag: any manifest pushed under it, acknowledged or not
                assert got in ledger.attempted_manifests[(repo, tag)], (repo, tag, got)
            else:
                assert got == digest, f"acknowledged {repo}:{tag} -> {digest} is {got} after the restart"
        disk = walk_root(server.root)
        assert disk.problems == [], "\n".join(disk.problems[:20])
        assert disk.blobs >= len(ledger.acked_blobs)
        assert asyncio.run(_after_restart(server.url, ledger)) == []

        async def push_after() -> None:
            after = Ledger()
            async with aiohttp.ClientSession(server.url) as http:
                await push_image(http, "crash/after", ["v1"], [os.urandom(5000)], chunked=True, ledger=after)

        asyncio.run(push_after())
        print(f"\ncrash: {len(ledger.acked_manifests)} manifest tags and {len(ledger.acked_blobs)} blobs "
              f"acknowledged before kill -9; after restart {api.repositories} repositories, {api.tags} tags, "
              f"{api.manifests} manifests and {api.blobs} blob reads verified, {disk.blobs} blob files hashed")
    finally:
        server.stop()

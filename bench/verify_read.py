"""What verification on read costs a blob GET: ``verify_on_read`` off, first and always, on one real
``lamina registry serve`` each (one worker, uvloop, sendfile), measured in the same run.

For each mode and blob size: the first GET of the blob (where "first" re-hashes), then the median of
the following GETs (where "first" costs a stat, and "always" re-hashes every time). Reads come from
the page cache (the blob was just pushed), so the figures are hashing and request cost, not disk.

Usage: ``.venv/bin/python bench/verify_read.py [--sizes-mib 1,64] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from _peers import start_lamina

MODES = ("off", "first", "always")


async def _get(session: aiohttp.ClientSession, url: str) -> float:
    start = time.perf_counter()
    async with session.get(url) as response:
        assert response.status == 200, response.status
        async for _ in response.content.iter_chunked(1 << 20):
            pass
    return time.perf_counter() - start


async def _measure(url: str, sizes: list[int], repeats: int) -> dict[int, tuple[float, float]]:
    figures: dict[int, tuple[float, float]] = {}
    async with aiohttp.ClientSession(url) as session:
        for size in sizes:
            data = os.urandom(size)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            async with session.post("/v2/bench/blob/blobs/uploads/", params={"digest": digest}, data=data) as r:
                assert r.status == 201, await r.text()
            path = f"/v2/bench/blob/blobs/{digest}"
            first = await _get(session, path)
            rest = [await _get(session, path) for _ in range(repeats)]
            figures[size] = (first, statistics.median(rest))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="1,64", help="comma-separated blob sizes in MiB")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    sizes = [int(float(s) * (1 << 20)) for s in args.sizes_mib.split(",")]
    results: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for mode in MODES:
            server = start_lamina(Path(tmp) / mode, config=f'verify_on_read = "{mode}"\n', workers=1)
            try:
                results[mode] = asyncio.run(_measure(server.url, sizes, args.repeats))
            finally:
                server.stop()
    hasher = hashlib.sha256()
    block = os.urandom(64 << 20)
    start = time.perf_counter()
    hasher.update(block)
    rate = len(block) / (time.perf_counter() - start) / 1e6
    print(f"sha256 on this machine: {rate:.0f} MB/s")
    print(f"{'mode':<8}{'size':>8}{'first GET ms':>14}{'next GETs ms':>14}{'next vs off':>13}")
    for mode in MODES:
        for size in sizes:
            first, rest = results[mode][size]
            ratio = rest / results["off"][size][1]
            print(f"{mode:<8}{size >> 20:>6}Mi{first * 1e3:>14.1f}{rest * 1e3:>14.2f}{ratio:>12.2f}x")


if __name__ == "__main__":
    main()

"""Headless Chromium for the console tests: dump a page's DOM, take a screenshot, read PNG pixels.

Chromium runs with a throwaway profile and no network but loopback (the page's URL). The PNG reader is
the minimum needed to check colours in a screenshot (8-bit RGB/RGBA, non-interlaced: what Chromium
writes), so the tests need no imaging library.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import zlib
from pathlib import Path

import pytest

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1280,900",
]


def chromium_binary() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium not installed (Debian package chromium; scripts/install-system-deps.sh installs it)")
    return path


async def run_chromium(profile: Path, *args: str, timeout: float = 60.0) -> str:
    process = await asyncio.create_subprocess_exec(
        chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


async def dump_dom(profile: Path, url: str) -> str:
    return await run_chromium(profile, "--dump-dom", url)


async def screenshot(profile: Path, url: str, target: Path) -> Path:
    await run_chromium(profile, f"--screenshot={target}", url)
    assert target.is_file() and target.stat().st_size > 0
    return target


def read_png(path: Path, max_rows: int = 200) -> tuple[int, int, list[bytes]]:
    """(width, height, the first ``max_rows`` rows as RGB bytes) of an 8-bit RGB or RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(min(height, max_rows)):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        previous = line
        rows.append(bytes(b for i in range(0, stride, channels) for b in line[i:i + 3]))
    return width, height, rows


def pixel(rows: list[bytes], x: int, y: int) -> tuple[int, int, int]:
    return rows[y][3 * x], rows[y][3 * x + 1], rows[y][3 * x + 2]

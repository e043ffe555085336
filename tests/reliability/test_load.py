"""Bounded load on a real ``lamina registry serve`` (2 workers): 64 clients pushing and pulling for a fixed
time, and 1,000 concurrent upload sessions. The figures are printed (``-s``) and the same functions write
them into docs/reliability.md (``bench/reliability.py --write-docs``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from helpers.registries import start_lamina
from reliability import SESSIONS_CONFIG, load_run, open_sessions

pytestmark = [pytest.mark.slow]

# Bounds, documented in docs/reliability.md. The server idles at ~170 MiB (two workers and the supervisor);
# the load run peaks ~10-20 MiB above that, 1,000 open sessions add ~10 MiB (no per-session buffer).
LOAD_PEAK_RSS_MIB = 400
SESSIONS_RSS_GROWTH_MIB = 64


def test_64_clients_push_and_pull_for_10s_without_an_error(tmp_path: Path) -> None:
    with start_lamina(tmp_path, workers=2) as server:
        assert server.process is not None
        report = load_run(server.url, server.process.pid, clients=64, duration=10.0)
    print(f"\nload: {asdict(report)}")
    assert report.errors == 0, report.first_errors
    assert report.operations >= 64  # every client completed at least one push and pull
    assert report.rss_peak_mib < LOAD_PEAK_RSS_MIB, report


def test_1000_open_upload_sessions_keep_memory_bounded(tmp_path: Path) -> None:
    with start_lamina(tmp_path, workers=2, config=SESSIONS_CONFIG) as server:
        assert server.process is not None
        report = open_sessions(server.url, server.process.pid, sessions=1000, repositories=50)
    print(f"\nsessions: {asdict(report)} growth {report.growth_mib:+.1f} MiB")
    assert report.errors == 0, report.first_errors
    assert report.opened == 1000 and report.refused == 0  # the limits are lifted: all are held open
    assert report.growth_mib < SESSIONS_RSS_GROWTH_MIB, report

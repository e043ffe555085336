"""bench/registry.py runs end to end against two real registries and reports every figure with a ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.interop]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "registry.py"


def test_bench_smoke(lamina_registry: RegistryProcess, distribution_registry: RegistryProcess) -> None:
    tiny = ["--sizes", "1", "--budget-mib", "4", "--clients", "1,4", "--duration", "0.2"]
    argv = [sys.executable, str(BENCH), "--json", *tiny, lamina_registry.url, distribution_registry.url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["meta"]["registries"] == [lamina_registry.url, distribution_registry.url]
    figures = {(row["figure"], row["clients"]) for row in report["results"]}
    kinds = ["push 1 MiB", "push-chunked 1 MiB", "pull 1 MiB", "manifest-put", "manifest-get", "tags-list"]
    assert figures == {(kind, clients) for kind in kinds for clients in (1, 4)}
    for row in report["results"]:
        for url in (lamina_registry.url, distribution_registry.url):
            assert row[url]["value"] > 0 and row[url]["operations"] > 0, (row["figure"], url)
        assert row["ratio"] == pytest.approx(
            row[lamina_registry.url]["value"] / row[distribution_registry.url]["value"]
        )
    # the benchmark really stored what it pushed: its 100 tags are listed by both registries
    for registry in (lamina_registry, distribution_registry):
        tags = requests.get(f"{registry.url}/v2/bench/tags/tags/list", params={"n": 1000}, timeout=30).json()["tags"]
        assert {f"t{i}" for i in range(100)} <= set(tags)

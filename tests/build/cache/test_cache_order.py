"""Several ``--cache-from``: the first listed that has a record for a step wins, whatever order the
registries answer in, also when the step's parent hit in another ref.

Two real lamina registries hold caches of the same Dockerfile built twice, so the same cache key has a
different result in each (the first RUN writes a random UUID). Builds on empty state dirs read both
through real HTTP proxies that delay one registry or the other, so the refs resolve concurrently and
answer in either order; the proxy logs show which answered first.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cache_helpers import make_context, ran, run_build, step_status

from helpers.images import busybox_image
from helpers.proxy import RegistryProxy
from helpers.registries import RegistryProcess, start_lamina
from lamina.build.builder import BuildResult

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

PREFIX = """\
FROM {base}
RUN cat /proc/sys/kernel/random/uuid > /one.txt && echo ran-one
"""
APP = PREFIX + """\
COPY a.txt /a.txt
RUN cat /one.txt /a.txt > /two.txt && echo ran-two
"""
REPO = "cacheorder/app"
DELAY = 0.4


@dataclass
class Caches:
    base: str
    a: RegistryProcess
    b: RegistryProcess
    cold: dict[str, BuildResult]  # "a" / "b": the build that exported REPO:cache there; "prefix": REPO:prefix on a
    context: Path


def _layers(result: BuildResult) -> list[str]:
    return [layer["digest"] for layer in json.loads(result.manifest)["layers"]]


@pytest.fixture(scope="module")
def caches(
    tmp_path_factory: pytest.TempPathFactory, lamina_registry: RegistryProcess, busybox_rootfs: Path
) -> Iterator[Caches]:
    base = busybox_image(lamina_registry, name="cacheorder/busybox", rootfs=busybox_rootfs).reference
    work = tmp_path_factory.mktemp("cache-order")
    a = start_lamina(work / "registry-a")
    b = start_lamina(work / "registry-b")
    try:
        context = make_context(work / "ctx", APP.format(base=base), {"a.txt": "A\n"})
        prefix = make_context(work / "prefix", PREFIX.format(base=base), {})
        cold = {
            name: run_build(ctx, work / f"cold-{name}", cache_to=(f"type=registry,ref={ref},mode=max",))[0]
            for name, ctx, ref in [("a", context, f"{a.host}/{REPO}:cache"), ("b", context, f"{b.host}/{REPO}:cache"),
                                   ("prefix", prefix, f"{a.host}/{REPO}:prefix")]
        }
        assert len({_layers(r)[1] for r in cold.values()}) == 3  # RUN one: three different results, one key
        yield Caches(base, a, b, cold, context)
    finally:
        a.stop()
        b.stop()


def _status(status: dict[str, str], part: str) -> str:
    (found,) = (value for step, value in status.items() if part in step)
    return found


def _manifest_answered(proxy: RegistryProxy) -> float:
    return min(t for t, method, path, _ in proxy.log if method == "GET" and "/manifests/" in path)


def _slow(seconds: float) -> Callable[[str, str], float]:
    return lambda method, path: seconds if "/v2/cacheorder/" in path else 0.0


@pytest.mark.parametrize(
    ("first", "slow"), [("a", "a"), ("a", "b"), ("b", "b"), ("b", "a")],
    ids=["a-first-a-slow", "a-first-b-slow", "b-first-b-slow", "b-first-a-slow"],
)
def test_first_listed_wins_whoever_answers_first(caches: Caches, tmp_path: Path, first: str, slow: str) -> None:
    second = "b" if first == "a" else "a"
    servers = {"a": caches.a, "b": caches.b}
    with RegistryProxy(servers[first].url, delay=_slow(DELAY if slow == first else 0.0)) as p1, \
            RegistryProxy(servers[second].url, delay=_slow(DELAY if slow == second else 0.0)) as p2:
        ref1, ref2 = f"{p1.host}/{REPO}:cache", f"{p2.host}/{REPO}:cache"
        result, text = run_build(caches.context, tmp_path / "state", cache_from=(ref1, ref2))
    fast, late = (p2, p1) if slow == first else (p1, p2)
    assert _manifest_answered(fast) < _manifest_answered(late)  # the refs really answered in that order
    status = step_status(text)
    steps = {k: v for k, v in status.items() if not k.startswith("FROM")}
    assert len(steps) == 3 and all(v == f"CACHED ({ref1})" for v in steps.values()), steps
    assert not ran(text, "ran-one") and not ran(text, "ran-two")
    assert _layers(result) == _layers(caches.cold[first]) and result.digest == caches.cold[first].digest


def test_a_step_whose_parent_hit_in_another_ref(caches: Caches, tmp_path: Path) -> None:
    """``prefix`` (listed first) holds RUN one only; ``b`` holds every step: RUN one hits in ``prefix``,
    the later steps in ``b`` — whose records are whole chains, so the image is ``b``'s, consistently."""
    with RegistryProxy(caches.a.url, delay=_slow(DELAY)) as pa, RegistryProxy(caches.b.url) as pb:
        prefix, full = f"{pa.host}/{REPO}:prefix", f"{pb.host}/{REPO}:cache"
        for attempt in range(2):  # the same answer on every run
            result, text = run_build(caches.context, tmp_path / f"state-{attempt}", cache_from=(prefix, full))
            status = step_status(text)
            assert _status(status, "ran-one") == f"CACHED ({prefix})"
            assert _status(status, "COPY a.txt") == f"CACHED ({full})"
            assert _status(status, "ran-two") == f"CACHED ({full})"
            assert _layers(result) == _layers(caches.cold["b"])
        result, text = run_build(caches.context, tmp_path / "state-swapped", cache_from=(full, prefix))
        assert all(v == f"CACHED ({full})" for k, v in step_status(text).items() if not k.startswith("FROM"))
        assert result.digest == caches.cold["b"].digest

"""Cache exports that add up (issue 13): several builds exporting to one ref at once, then each rebuilt on
an empty state from that ref — every step cached; a ``max-size`` cache stays under it across merges.

Real registries (lamina's, which honours ``If-Match``; CNCF distribution, which ignores it and gets the
re-read strategy), real builds. The in-process ones are ``FROM scratch`` + ``COPY`` builds run
concurrently in one event loop, behind a proxy that holds every PUT of the cache tag for 0.3 s so the
writers really overlap: each reads the tag before any of them wrote it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_helpers import make_context, ran, run_build, step_status

from helpers.images import busybox_image
from helpers.proxy import RegistryProxy
from helpers.registries import RegistryProcess
from lamina.build.builder import BuildRequest, BuildResult, build
from lamina.build.cacheopts import parse_cache_from, parse_cache_to
from lamina.build.progress import PlainProgress
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("needs root (overlay mounts)", allow_module_level=True)


def _request(context: Path, root: Path, *, cache_to: str | None = None, cache_from: str | None = None) -> BuildRequest:
    return BuildRequest(
        context_dir=context, dockerfile=(context / "Dockerfile").read_text(), root=root,
        cache_to=(parse_cache_to(cache_to),) if cache_to else (),
        cache_from=(parse_cache_from(cache_from),) if cache_from else (),
    )


async def _gather(requests: list[BuildRequest]) -> list[tuple[BuildResult, str]]:
    streams = [io.StringIO() for _ in requests]
    results = await asyncio.gather(*(build(r, PlainProgress(s)) for r, s in zip(requests, streams, strict=True)))
    return [(result, stream.getvalue()) for result, stream in zip(results, streams, strict=True)]


def _all_cached(text: str, ref: str) -> bool:
    status = step_status(text)
    steps = [v for k, v in status.items() if not k.startswith("FROM")]
    return bool(steps) and all(v == f"CACHED ({ref})" for v in steps)


def _hold_tag_puts(tag: str, seconds: float = 0.3) -> Callable[[str, str], float]:
    return lambda method, path: seconds if method == "PUT" and path.endswith(f"/manifests/{tag}") else 0.0


def _scratch_contexts(tmp: Path, count: int, size: int = 2000) -> list[Path]:
    return [
        make_context(tmp / f"ctx{i}", f"FROM scratch\nCOPY own.bin /own{i}.bin\nCOPY shared.txt /shared{i}.txt\n",
                     {"own.bin": os.urandom(size).hex(), "shared.txt": "shared\n"})
        for i in range(count)
    ]


@pytest.mark.parametrize("kind", ["lamina", "distribution"])
def test_four_overlapping_exports_add_up(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    registry: RegistryProcess = request.getfixturevalue(f"{kind}_registry")
    contexts = _scratch_contexts(tmp_path, 4)
    with RegistryProxy(registry.url, delay=_hold_tag_puts("cache")) as proxy:
        ref = f"{proxy.host}/cumulative/overlap-{kind}:cache"
        started = time.monotonic()
        cold = asyncio.run(_gather([_request(c, tmp_path / f"cold{i}", cache_to=f"type=registry,ref={ref},mode=max")
                                    for i, c in enumerate(contexts)]))
        took = time.monotonic() - started
        summaries = [result.cache_exports[0] for result, _ in cold]
        reads = sum(1 for _, method, path, _ in proxy.log if method == "GET" and path.endswith("/manifests/cache"))
        print(f"\n{kind}: 4 overlapping exports in {took:.2f}s: conflicts (412) {[s.conflicts for s in summaries]}, "
              f"rewrites after re-read {[s.rewrites for s in summaries]}, tag reads {reads}")
        if kind == "lamina":  # every writer read the empty tag; If-None-Match: * let exactly one write it first
            assert sum(s.conflicts for s in summaries) >= 3 and not any(s.rewrites for s in summaries)
        else:  # distribution wrote all four; the losers found their records missing on re-reading
            assert sum(s.rewrites for s in summaries) >= 1 and not any(s.conflicts for s in summaries)
        assert not any(s.bound_hit for s in summaries)
        warm = asyncio.run(_gather([_request(c, tmp_path / f"warm{i}", cache_from=ref)
                                    for i, c in enumerate(contexts)]))
    for (result, text), (cold_result, _) in zip(warm, cold, strict=True):
        assert _all_cached(text, ref), text
        assert result.digest == cold_result.digest


def test_max_size_holds_across_twenty_merged_exports(lamina_registry: RegistryProcess, tmp_path: Path) -> None:
    limit = 40_000  # bytes of layers; each build brings a ~8 kB own layer and the shared one
    ref = f"{lamina_registry.host}/cumulative/bounded:cache"
    contexts = _scratch_contexts(tmp_path, 20, size=4000)
    sizes = []
    for i, context in enumerate(contexts):
        result, _ = run_build(context, tmp_path / f"s{i}", cache_to=(f"type=registry,ref={ref},max-size=40kB",))
        assert result.cache_exports[0].manifest_digest is not None
        req = urllib.request.Request(f"{lamina_registry.url}/v2/cumulative/bounded/manifests/cache",
                                     headers={"Accept": mt.OCI_MANIFEST})
        with urllib.request.urlopen(req) as resp:
            sizes.append(sum(layer["size"] for layer in json.loads(resp.read())["layers"]))
    assert max(sizes) <= limit and sizes[-1] > limit / 2, sizes  # bounded, yet not emptied
    _, text = run_build(contexts[-1], tmp_path / "last", cache_from=(ref,))
    assert _all_cached(text, ref), text  # the most recent build survives every prune
    _, text = run_build(contexts[0], tmp_path / "first", cache_from=(ref,))
    assert not _all_cached(text, ref)  # the oldest was dropped


def test_merge_false_replaces(lamina_registry: RegistryProcess, tmp_path: Path) -> None:
    ref = f"{lamina_registry.host}/cumulative/replace:cache"
    one, two = _scratch_contexts(tmp_path, 2)
    run_build(one, tmp_path / "a", cache_to=(f"type=registry,ref={ref}",))
    run_build(two, tmp_path / "b", cache_to=(f"type=registry,ref={ref},merge=false",))
    _, text = run_build(one, tmp_path / "c", cache_from=(ref,))
    assert not _all_cached(text, ref)
    _, text = run_build(two, tmp_path / "d", cache_from=(ref,))
    assert _all_cached(text, ref)


def test_local_exports_merge(tmp_path: Path) -> None:
    dest = tmp_path / "layout"
    contexts = _scratch_contexts(tmp_path, 3)
    asyncio.run(_gather([_request(c, tmp_path / f"cold{i}", cache_to=f"type=local,dest={dest},mode=max")
                         for i, c in enumerate(contexts)]))
    for i, context in enumerate(contexts):
        _, text = run_build(context, tmp_path / f"warm{i}", cache_from=(f"type=local,src={dest}",))
        assert _all_cached(text, f"local:{dest}"), text


# Four real Dockerfiles (RUN in runc) built at the same time, each on its own thread and state dir.
DOCKERFILES = [
    "FROM {base}\nRUN echo one > /one.txt && echo ran-a1\nCOPY a.txt /a.txt\n"
    "RUN cat /a.txt /one.txt > /x && echo ran-a2\n",
    "FROM {base}\nWORKDIR /w\nRUN echo two > two.txt && echo ran-b1\nRUN wc -c two.txt > n && echo ran-b2\n",
    "FROM {base} AS stage\nRUN echo s > /s && echo ran-c1\nFROM {base}\nCOPY --from=stage /s /s\n"
    "RUN cat /s && echo ran-c2\n",
    "FROM {base}\nENV X=4\nCOPY a.txt /d.txt\nRUN echo $X >> /d.txt && echo ran-d1\n",
]


@pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc")
@pytest.mark.parametrize("kind", ["lamina", "distribution"])
def test_four_dockerfiles_built_at_once_then_each_fully_cached(
    kind: str, request: pytest.FixtureRequest, busybox_rootfs: Path, tmp_path: Path
) -> None:
    registry: RegistryProcess = request.getfixturevalue(f"{kind}_registry")
    base = busybox_image(registry, name="cumulative/busybox", rootfs=busybox_rootfs).reference
    ref = f"{registry.host}/cumulative/four-{kind}:cache"
    contexts = [make_context(tmp_path / f"ctx{i}", text.format(base=base), {"a.txt": f"A{i}\n"})
                for i, text in enumerate(DOCKERFILES)]
    barrier = threading.Barrier(len(contexts))
    cold: dict[int, BuildResult] = {}

    def one(i: int) -> None:
        barrier.wait()
        cold[i], _ = run_build(contexts[i], tmp_path / f"cold{i}", cache_to=(f"type=registry,ref={ref},mode=max",))

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(contexts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    assert len(cold) == 4
    summaries = [cold[i].cache_exports[0] for i in range(4)]
    print(f"\n{kind}: 4 Dockerfiles at once in {took:.2f}s; exports {[round(s.seconds, 2) for s in summaries]} s, "
          f"conflicts {[s.conflicts for s in summaries]}, rewrites {[s.rewrites for s in summaries]}")
    assert not any(s.bound_hit for s in summaries)
    cached = 0
    for i, context in enumerate(contexts):
        result, text = run_build(context, tmp_path / f"warm{i}", cache_from=(ref,))
        assert not any(ran(text, f"ran-{c}{n}") for c in "abcd" for n in "12"), text
        cached += _all_cached(text, ref) and result.digest == cold[i].digest
    assert cached == 4

"""The bounds of a merging export, with a writer that never lets it win: a proxy hook moves the cache tag
right after each request of the build (another real cache manifest PUT straight to the registry).

- lamina's registry (conditional PUTs): the tag moves after every read, so every PUT gets 412; after
  8 conflicts the export fails with one line (or warns with ``ignore-error=true``);
- CNCF distribution (the header ignored): the tag is overwritten after every write, so every re-read
  finds this build's records missing; after 4 rewrites the progress output says so and the build passes.
"""

from __future__ import annotations

import itertools
import os
import urllib.request
from pathlib import Path

import pytest
from cache_helpers import make_context, run_build

from helpers.proxy import RegistryProxy
from helpers.registries import RegistryProcess
from lamina.build.cache.registry import CONFLICT_RETRIES, VERIFY_ROUNDS
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("needs root (overlay mounts)", allow_module_level=True)


def _context(path: Path, name: str) -> Path:
    return make_context(path, f"FROM scratch\nCOPY {name}.txt /\n", {f"{name}.txt": f"{name}\n"})


def _other_caches(registry: RegistryProcess, repo: str, tmp: Path) -> list[bytes]:
    """Two real cache manifests of other builds in ``repo`` (tags other-0, other-1), as bytes."""
    out = []
    for i in range(2):
        run_build(_context(tmp / f"other{i}", f"other{i}"), tmp / f"other-state{i}",
                  cache_to=(f"type=registry,ref={registry.host}/{repo}:other-{i},merge=false",))
        req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/other-{i}",
                                     headers={"Accept": mt.OCI_MANIFEST})
        with urllib.request.urlopen(req) as resp:
            out.append(resp.read())
    return out


def _put(registry: RegistryProcess, repo: str, data: bytes) -> None:
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/cache", data=data, method="PUT",
                                 headers={"Content-Type": mt.OCI_MANIFEST})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201


def test_conflicts_are_bounded_on_a_conditional_registry(lamina_registry: RegistryProcess, tmp_path: Path) -> None:
    repo = "cumulative/bounded-conflicts"
    others = itertools.cycle(_other_caches(lamina_registry, repo, tmp_path))
    _put(lamina_registry, repo, next(others))

    def move_after_read(method: str, path: str, status: int) -> None:
        if method == "GET" and path.endswith("/manifests/cache"):
            _put(lamina_registry, repo, next(others))

    with RegistryProxy(lamina_registry.url, after=move_after_read) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        with pytest.raises(Exception) as failed:
            run_build(_context(tmp_path / "ctx", "mine"), tmp_path / "s1", cache_to=(f"type=registry,ref={ref}",))
        message = str(failed.value)
        assert f"{ref} moved {CONFLICT_RETRIES + 1} times while merging (HTTP 412 each time)" in message
        assert "\n" not in message
        _, text = run_build(_context(tmp_path / "ctx", "mine"), tmp_path / "s2",
                            cache_to=(f"type=registry,ref={ref},ignore-error=true",))
    assert f"WARNING: exporting cache to {ref}: " in text and "(ignored: ignore-error=true)" in text


def test_rewrites_are_bounded_where_the_condition_is_ignored(
    distribution_registry: RegistryProcess, tmp_path: Path
) -> None:
    repo = "cumulative/bounded-rewrites"
    others = itertools.cycle(_other_caches(distribution_registry, repo, tmp_path))

    def overwrite_after_write(method: str, path: str, status: int) -> None:
        if method == "PUT" and path.endswith("/manifests/cache"):
            _put(distribution_registry, repo, next(others))

    with RegistryProxy(distribution_registry.url, after=overwrite_after_write) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        result, text = run_build(_context(tmp_path / "ctx", "mine"), tmp_path / "s",
                                 cache_to=(f"type=registry,ref={ref}",))
    summary = result.cache_exports[0]
    assert summary.bound_hit and summary.rewrites == VERIFY_ROUNDS and summary.conflicts == 0
    assert f"WARNING: {ref}: this build's records were still missing after {VERIFY_ROUNDS} re-reads" in text

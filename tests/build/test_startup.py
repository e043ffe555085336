"""What a fresh ``lamina build`` process imports: ``--help`` needs no event loop or client, and a fully
cached build (every step from the registry cache, image pushed) never loads the worker (runc, overlay,
tar, codecs), archive extraction, the OCI-layout cache backend, rich, or aiohttp (lamina's own HTTP/1.1
client serves a plain-HTTP registry), nor the RUN --mount parser and mount types when no RUN has a mount,
nor platformdirs when --root is given. Start-up time is mostly imports, so these properties are what keeps
it low; a timing assert would only be flaky. The collector pause of start-up (lamina.gcpause) is pinned
by what it leaves behind: the collector on again, the imports frozen in the lamina process only."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.build.builder import BuildRequest, build
from lamina.build.cacheopts import parse_cache_to
from lamina.build.progress import PlainProgress

_REPORT = """\
import gc, json, sys
from lamina.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(f"GC {gc.isenabled()} {gc.get_freeze_count()}", file=sys.stderr)
print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(rc)
"""
# The collector pause in a lamina process of its own (main() without argv, as the `lamina` script runs it):
# the imports of each pause end frozen, the collector on again.
_OWN_PROCESS = """\
import gc, sys
from lamina.gcpause import collector_paused, own_process
own_process()
with collector_paused():
    assert not gc.isenabled()
    import lamina.build.builder
print(gc.isenabled(), gc.get_freeze_count() > 1000)
"""

# Never needed when every step is a cache hit and the image is pushed (to a plain-HTTP loopback registry:
# lamina's HTTP/1.1 client, no aiohttp, no yarl; email.* is ADD <url>'s header parsing, fractions Go durations;
# the RUN --mount parser, the mount types and csv only for a RUN with --mount; difflib only for an error's
# "did you mean"; platformdirs only for the default state directory, and the tests pass --root; the cache
# export's merge (cumulative, cachemerge) only for --cache-to or a multi-part inline cache; the token client
# only at a Bearer challenge, which the tests' plain registry never sends; the cache-mount link to the remote
# caches only for a build with a RUN --mount or a --cache-to).
_NOT_ON_CACHED_PATH = (
    "aiohttp",
    "yarl",
    "email",
    "fractions",
    "lamina.build.worker",
    "lamina.build.filecopy.archive",
    "lamina.build.cache.layout",
    "rich",
    "tarfile",
    "zstandard",
    "lamina.build.mounts",
    "lamina.build.dockerfile.runmount",
    "csv",
    "difflib",
    "platformdirs",
    "lamina.build.cache.cumulative",
    "lamina.oci.cachemerge",
    "lamina.client.tokens",
    "lamina.build.cache.mountsync",
)


def _run(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run([sys.executable, "-c", _REPORT, *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    modules = set(json.loads(proc.stderr.rsplit("MODULES ", 1)[1]))
    return proc, modules


def _loaded(modules: set[str], prefix: str) -> list[str]:
    return sorted(m for m in modules if m == prefix or m.startswith(prefix + "."))


def test_build_help_loads_no_event_loop_client_or_builder() -> None:
    proc, modules = _run("build", "--help")
    assert proc.returncode == 0 and "--cache-from" in proc.stdout
    for prefix in ("asyncio", "aiohttp", "ssl", "lamina.client", "lamina.build.builder", "lamina.build.dockerfile",
                   *_NOT_ON_CACHED_PATH):
        assert _loaded(modules, prefix) == [], prefix


def test_collector_paused_restores_and_freezes_only_in_lamina_own_process() -> None:
    from lamina.gcpause import collector_paused

    frozen = gc.get_freeze_count()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # a host process's objects stay collectable
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a collector its caller had turned off stays off
    finally:
        gc.enable()
    own = subprocess.run([sys.executable, "-c", _OWN_PROCESS], capture_output=True, text=True, timeout=60, check=False)
    assert own.returncode == 0 and own.stdout.split() == ["True", "True"], own.stderr


def test_bad_flag_loads_no_event_loop() -> None:
    proc, modules = _run("build", "--progress", "fancy", ".")
    assert proc.returncode == 2 and "invalid choice: 'fancy'" in proc.stderr
    assert _loaded(modules, "asyncio") == [] and _loaded(modules, "aiohttp") == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc")
def test_fully_cached_build_process_never_loads_the_worker(
    lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path
) -> None:
    base = busybox_image(lamina_registry, name="startup/busybox", rootfs=busybox_rootfs).reference
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nWORKDIR /app\nCOPY a.txt /app/\nRUN cat a.txt > b.txt\n")
    (context / "a.txt").write_text("A\n")
    cache = f"{lamina_registry.host}/startup/app:cache"
    request = BuildRequest(context_dir=context, dockerfile=(context / "Dockerfile").read_text(), root=tmp_path / "cold",
                           cache_to=(parse_cache_to(f"type=registry,ref={cache},mode=max"),))
    cold = asyncio.run(build(request, PlainProgress(io.StringIO())))
    assert cold.cached_steps == 0

    tag = f"{lamina_registry.host}/startup/app:warm"
    proc, modules = _run("build", "--progress", "plain", "--root", str(tmp_path / "warm"), "--cache-from", cache,
                         "-t", tag, "--push", str(context))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cold.digest)  # same image, rebuilt from the cache alone
    assert "CACHED" in proc.stderr
    assert "GC True 0" in proc.stderr  # main(argv) in a host process: the collector back on, nothing frozen
    for prefix in _NOT_ON_CACHED_PATH:
        assert _loaded(modules, prefix) == [], prefix

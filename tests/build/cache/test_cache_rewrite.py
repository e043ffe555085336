"""``--cache-from`` a ref that is rewritten while the build reads it never fails the build.

A real lamina registry holds the cache (CNCF distribution too, for the cases made with blob DELETE and a
tag PUT only); a real HTTP proxy in front of it runs the "other writer" at the exact moment between two
requests of the build: the tag moved to another cache, blobs unlinked with a
blob ``DELETE``, the old cache's layers collected by ``lamina registry gc``. Each case: one warning line
naming the ref and what was missing, and the affected steps built instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cache_helpers import APP, make_context, ran, run_build, step_status

from helpers.images import busybox_image
from helpers.proxy import RegistryProxy
from helpers.registries import RegistryProcess, start_lamina
from lamina.oci import mediatypes as mt
from lamina.oci import parse_digest
from lamina.store import open_storage

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    server = start_lamina(tmp_path_factory.mktemp("rewrite-registry"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["lamina", "distribution"])
def deleting(request: pytest.FixtureRequest) -> RegistryProcess:
    """For the cases made with blob DELETE and tag PUT only: lamina's registry and CNCF distribution."""
    name = "registry" if request.param == "lamina" else "distribution_registry"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="cacherewrite/busybox", rootfs=busybox_rootfs).reference


def _context(path: Path, base: str, text: str, last: str = "ran-two") -> Path:
    return make_context(path, APP.format(base=base).replace("ran-two", last), {"a.txt": text})


def _export(context: Path, ref: str, state: Path, options: str = "") -> None:
    run_build(context, state, cache_to=(f"type=registry,ref={ref},mode=max{options}",))


def _manifest(registry: RegistryProcess, repo: str, tag: str) -> tuple[bytes, dict]:
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": mt.OCI_MANIFEST})
    with urllib.request.urlopen(request) as response:
        data = response.read()
    return data, json.loads(data)


def _move_tag(registry: RegistryProcess, repo: str, tag: str, data: bytes) -> None:
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", data=data, method="PUT",
                                     headers={"Content-Type": mt.OCI_MANIFEST})
    with urllib.request.urlopen(request) as response:
        assert response.status == 201


def _delete_blob(registry: RegistryProcess, repo: str, digest: str) -> None:
    """The blob gone from under the manifest that uses it: CNCF distribution deletes it over the API;
    lamina's registry refuses that (405 UNSUPPORTED), so the test removes the link in its store instead."""
    if registry.name == "lamina registry":
        storage = open_storage(registry.root)
        try:
            assert storage.metadata.unlink_blob(repo, parse_digest(digest), force=True)
        finally:
            storage.close()
        return
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/blobs/{digest}", method="DELETE")
    with urllib.request.urlopen(request) as response:
        assert response.status == 202


def _has_blob(registry: RegistryProcess, repo: str, digest: str) -> bool:
    request = urllib.request.Request(f"{registry.url}/v2/{repo}/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def _gc(registry: RegistryProcess, grace: int = 0) -> None:
    subprocess.run(
        [sys.executable, "-m", "lamina.cli", "registry", "gc", "--root", str(registry.root), "--grace", str(grace),
         "--delete-untagged"], capture_output=True, text=True, timeout=60, check=True,
    )


def _once(when: Callable[[str, str], bool], action: Callable[[], None]) -> Callable[[str, str, int], None]:
    """A proxy hook running ``action`` after the first request ``when`` matches has been answered."""
    fired: list[bool] = []

    def hook(method: str, path: str, status: int) -> None:
        if not fired and when(method, path):
            fired.append(True)
            action()

    return hook


def _rewritten_after_config_read(registry: RegistryProcess, repo: str, base: str, tmp: Path) -> tuple[dict, Callable]:
    """``repo:cache`` holds APP's cache; ``repo:next`` another's. The hook, once the build has read
    ``:cache``'s config, moves ``:cache`` to ``:next``'s manifest and collects the old cache's blobs."""
    _export(_context(tmp / "v1", base, "A\n"), f"{registry.host}/{repo}:cache", tmp / "w1")
    _export(_context(tmp / "v2", base, "B\n"), f"{registry.host}/{repo}:next", tmp / "w2")
    _, old = _manifest(registry, repo, "cache")
    new, _ = _manifest(registry, repo, "next")

    def rewrite() -> None:
        _move_tag(registry, repo, "cache", new)
        _gc(registry)

    hook = _once(lambda method, path: method == "GET" and path.endswith(old["config"]["digest"]), rewrite)
    return old, hook


def test_config_gone_is_one_warning_and_the_steps_built(deleting: RegistryProcess, base: str, tmp_path: Path) -> None:
    context = _context(tmp_path / "ctx", base, "A\n")
    ref = f"{deleting.host}/rewrite/config:cache"
    _export(context, ref, tmp_path / "writer")
    _, doc = _manifest(deleting, "rewrite/config", "cache")
    _delete_blob(deleting, "rewrite/config", doc["config"]["digest"])
    _, text = run_build(context, tmp_path / "reader", cache_from=(ref,))
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    assert warnings == [
        f"WARNING: cache {ref} not used: its manifest names config blob {doc['config']['digest']}, which the "
        "registry no longer has (the ref is being rewritten or its blobs were deleted)"
    ], warnings
    assert ran(text, "ran-one") and ran(text, "ran-two") and "CACHED" not in text


def test_tag_moves_between_the_manifest_and_config_reads(
    deleting: RegistryProcess, base: str, tmp_path: Path
) -> None:
    repo = "rewrite/moving"
    _export(_context(tmp_path / "v1", base, "A\n"), f"{deleting.host}/{repo}:cache", tmp_path / "w1")
    context = _context(tmp_path / "v2", base, "B\n")
    _export(context, f"{deleting.host}/{repo}:next", tmp_path / "w2")
    _, old = _manifest(deleting, repo, "cache")
    new, _ = _manifest(deleting, repo, "next")

    def rewrite() -> None:  # the other writer's manifest PUT, then its old config collected
        _move_tag(deleting, repo, "cache", new)
        _delete_blob(deleting, repo, old["config"]["digest"])

    hook = _once(lambda method, path: method == "GET" and path.endswith("/manifests/cache"), rewrite)
    with RegistryProxy(deleting.url, after=hook) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        _, text = run_build(context, tmp_path / "reader", cache_from=(ref,))
    assert f"WARNING: cache {ref}: config blob {old['config']['digest']} was gone (the ref was being rewritten); " \
           "read the ref again" in text
    steps = {k: v for k, v in step_status(text).items() if not k.startswith("FROM")}
    assert len(steps) == 4 and all(v == f"CACHED ({ref})" for v in steps.values()), steps  # the new cache's hits


def test_layers_collected_after_the_import_fully_cached_push(
    registry: RegistryProcess, base: str, tmp_path: Path
) -> None:
    repo = "rewrite/collected"
    _, hook = _rewritten_after_config_read(registry, repo, base, tmp_path)
    with RegistryProxy(registry.url, after=hook) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        target = f"{registry.host}/rewrite/app:latest"
        result, text = run_build(_context(tmp_path / "v1", base, "A\n"), tmp_path / "reader", cache_from=(ref,),
                                 tags=(target,), push=True)
    gone = [line for line in text.splitlines() if line.startswith("WARNING")]
    assert len(gone) == 1 and gone[0].startswith(f"WARNING: cache {ref}: layer(s) ") and \
        gone[0].endswith("gone from it (the ref was rewritten meanwhile); building the steps that used them"), gone
    assert ran(text, "ran-one") and ran(text, "ran-two")
    assert result.pushed == (target,)
    _, pushed = _manifest(registry, "rewrite/app", "latest")
    assert [layer["digest"] for layer in pushed["layers"]] == [layer["digest"] for layer in
                                                               json.loads(result.manifest)["layers"]]


def test_layers_collected_under_a_step_that_executes(registry: RegistryProcess, base: str, tmp_path: Path) -> None:
    repo = "rewrite/under"
    _, hook = _rewritten_after_config_read(registry, repo, base, tmp_path)
    with RegistryProxy(registry.url, after=hook) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        _, text = run_build(_context(tmp_path / "v1b", base, "A\n", last="ran-two-changed"), tmp_path / "reader",
                            cache_from=(ref,))
    warning = next(line for line in text.splitlines() if line.startswith("WARNING"))
    assert f"from {ref} unusable" in warning and "solving stage stage-0 again without them" in warning, warning
    assert ran(text, "ran-one") and ran(text, "ran-two-changed")


def test_first_listed_with_layers_gone_falls_to_the_next(registry: RegistryProcess, base: str, tmp_path: Path) -> None:
    """The first ref's records hit until its layers turn out collected; then the second ref's hit."""
    repo = "rewrite/first"
    _, hook = _rewritten_after_config_read(registry, repo, base, tmp_path)
    backup = f"{registry.host}/rewrite/backup:cache"
    context = _context(tmp_path / "v1", base, "A\n")
    _export(context, backup, tmp_path / "w3")
    with RegistryProxy(registry.url, after=hook) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        result, text = run_build(context, tmp_path / "reader", cache_from=(ref, backup))
    assert f"WARNING: cache {ref}: layer(s) " in text
    assert not ran(text, "ran-one") and not ran(text, "ran-two"), text
    origins = {step.name.split("] ", 1)[1]: step.origin for step in result.steps}  # the last round's
    assert all(origins[k] == backup for k in origins if not k.startswith("WORKDIR")), origins


MULTI = """\
FROM {base} AS builder
RUN echo built > /artifact && echo ran-builder
FROM builder
RUN cat /artifact > /copy && echo {marker}
"""


def test_layers_gone_from_a_stage_another_builds_on(deleting: RegistryProcess, base: str, tmp_path: Path) -> None:
    """The final stage executes on top of ``builder``'s cached chain, whose layer is gone: ``builder`` is
    solved again too (its own hits are not usable any more), not only the stage that tripped on it."""
    repo = "rewrite/stages"
    context = make_context(tmp_path / "ctx", MULTI.format(base=base, marker="ran-final"), {})
    cold, _ = run_build(context, tmp_path / "writer", cache_to=(f"type=registry,ref={deleting.host}/{repo}:cache,"
                                                               "mode=max",))
    builder_layer = json.loads(cold.manifest)["layers"][1]["digest"]  # base, builder's RUN, final RUN
    _, doc = _manifest(deleting, repo, "cache")
    hook = _once(lambda method, path: method == "GET" and path.endswith(doc["config"]["digest"]),
                 lambda: _delete_blob(deleting, repo, builder_layer))
    (context / "Dockerfile").write_text(MULTI.format(base=base, marker="ran-final-changed"))
    with RegistryProxy(deleting.url, after=hook) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        _, text = run_build(context, tmp_path / "reader", cache_from=(ref,))
    assert f"from {ref} unusable" in text
    assert ran(text, "ran-builder") and ran(text, "ran-final-changed")


def test_readers_never_fail_while_a_writer_rewrites_the_ref(
    registry: RegistryProcess, base: str, tmp_path: Path
) -> None:
    """Real concurrency: a writer thread replaces the ref with other caches and collects the old ones
    (``gc --grace 1``) in a loop while builds read the ref and push, until the ref moved three times;
    every read build succeeds and pushes a complete image."""
    ref = f"{registry.host}/rewrite/busy:cache"
    contexts = [_context(tmp_path / f"v{i}", base, f"{i}\n") for i in range(2)]
    _export(contexts[0], ref, tmp_path / "seed")
    stop = threading.Event()
    writes: list[int] = []
    failures: list[BaseException] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                _export(contexts[(len(writes) + 1) % 2], ref, tmp_path / f"w{len(writes)}", ",merge=false")
                _gc(registry, grace=1)
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)
                return
            writes.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    outcomes = []
    try:
        n = 0
        while n < 40 and (n < 3 or len(writes) < 3) and not failures:  # reads until the ref moved 3 times
            n += 1
            target = f"{registry.host}/rewrite/busy-out:{n}"
            result, text = run_build(contexts[n % 2], tmp_path / f"r{n}", cache_from=(ref,), tags=(target,),
                                     push=True)
            assert result.pushed == (target,)
            _, pushed = _manifest(registry, "rewrite/busy-out", str(n))
            for blob in [pushed["config"], *pushed["layers"]]:
                assert _has_blob(registry, "rewrite/busy-out", blob["digest"]), blob
            outcomes.append((sum(1 for s in result.steps if s.cached), text.count("WARNING: cache")))
    finally:
        stop.set()
        thread.join(120)
    assert not failures, failures
    print(f"writes during the reads: {len(writes)}; reads (cached steps, cache warnings): {outcomes}")


COPY_FROM = """\
FROM {base} AS builder
RUN echo built > /artifact && echo ran-builder
FROM {base}
COPY --from=builder /artifact /copied
RUN cat /copied > /copy && echo ran-final
"""


def test_export_after_layers_gone_names_none_of_them(deleting: RegistryProcess, base: str, tmp_path: Path) -> None:
    """``builder`` is not solved (the ``COPY --from`` hits) and its cached layer is gone: the ``mode=max``
    export of this build keeps ``builder`` as a link instead of naming the lost layer, and succeeds."""
    repo = "rewrite/export"
    context = make_context(tmp_path / "ctx", COPY_FROM.format(base=base), {})
    cold, _ = run_build(context, tmp_path / "writer", cache_to=(f"type=registry,ref={deleting.host}/{repo}:cache,"
                                                               "mode=max",))
    _, doc = _manifest(deleting, repo, "cache")
    final_layers = {layer["digest"] for layer in json.loads(cold.manifest)["layers"]}
    (builder_layer,) = {layer["digest"] for layer in doc["layers"]} - final_layers
    hook = _once(lambda method, path: method == "GET" and path.endswith(doc["config"]["digest"]),
                 lambda: _delete_blob(deleting, repo, builder_layer))
    out = f"{deleting.host}/rewrite/export-out:cache"
    with RegistryProxy(deleting.url, after=hook) as proxy:
        ref = f"{proxy.host}/{repo}:cache"
        result, text = run_build(context, tmp_path / "reader", cache_from=(ref,),
                                 cache_to=(f"type=registry,ref={out},mode=max",))
    assert f"WARNING: cache {ref}: layer(s) {builder_layer.split(':')[1][:12]} gone from it" in text
    assert not ran(text, "ran-builder") and not ran(text, "ran-final")  # the final stage's hits stand
    assert result.cache_exports[0].manifest_digest is not None
    _, exported = _manifest(deleting, "rewrite/export-out", "cache")
    assert builder_layer not in {layer["digest"] for layer in exported["layers"]}


def test_local_layout_with_a_layer_file_gone(base: str, tmp_path: Path) -> None:
    """``type=local``: a layer file gone from the layout dir is found before the OCI output needs it."""
    context = _context(tmp_path / "ctx", base, "A\n")
    layout = tmp_path / "layout"
    cold, _ = run_build(context, tmp_path / "writer", cache_to=(f"type=local,dest={layout},mode=max",))
    run_one = json.loads(cold.manifest)["layers"][3]["digest"]  # base, WORKDIR, COPY, RUN one
    (layout / "blobs" / "sha256" / run_one.split(":")[1]).unlink()
    tar = tmp_path / "image.tar"
    spec = f"type=local,src={layout}"
    _, text = run_build(context, tmp_path / "reader", cache_from=(spec,), outputs=({"type": "oci", "dest": str(tar)},))
    warning = next(line for line in text.splitlines() if line.startswith("WARNING"))
    assert warning.startswith(f"WARNING: cache local:{layout}: layer(s) ") and run_one[7:19] in warning, warning
    assert ran(text, "ran-one") and ran(text, "ran-two") and tar.stat().st_size > 0

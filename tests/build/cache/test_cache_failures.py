"""An unreadable cache is a warning and a slower build, never a failed one; a failed export fails the
build unless ignore-error=true; the local state is never left corrupt.

Real registries (lamina's, CNCF distribution), a real 401-answering HTTP server, a corrupted blob in
distribution's storage, a lamina registry that rejects the legacy cache form.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from cache_helpers import APP, make_context, ran, run_build, step_status

from helpers.api import push_blob, put_manifest
from helpers.images import busybox_image
from helpers.registries import RegistryProcess, free_port
from lamina.build.cache.registry import CacheExportError
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="cachefail/busybox", rootfs=busybox_rootfs).reference


@pytest.fixture
def context(tmp_path: Path, base: str) -> Path:
    return make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n"})


def _executes_everything(text: str) -> bool:
    return ran(text, "ran-one") and ran(text, "ran-two") and "CACHED" not in text


def test_missing_ref_is_a_warning(lamina_registry: RegistryProcess, context: Path, tmp_path: Path) -> None:
    ref = f"{lamina_registry.host}/cachefail/none:cache"
    _, text = run_build(context, tmp_path / "state", cache_from=(ref,))
    assert f"WARNING: cache {ref} not found, building without it" in text
    assert _executes_everything(text)


def test_unreachable_registry_is_a_warning(context: Path, tmp_path: Path) -> None:
    ref = f"127.0.0.1:{free_port()}/nobody/home:cache"
    _, text = run_build(context, tmp_path / "state", cache_from=(ref,))
    assert f"WARNING: cache {ref} not used:" in text and _executes_everything(text)


async def _serve_401() -> tuple[web.AppRunner, str]:
    async def deny(request: web.Request) -> web.Response:
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", deny)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"127.0.0.1:{port}"


def test_401_is_a_warning(context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))  # anonymous, whatever the host has
    loop = asyncio.new_event_loop()
    runner, host = loop.run_until_complete(_serve_401())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        _, text = run_build(context, tmp_path / "state", cache_from=(f"{host}/private/app:cache",))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()
    assert f"WARNING: cache {host}/private/app:cache not used:" in text and "401" in text
    assert _executes_everything(text)


def test_corrupt_config_and_foreign_content_are_warnings(
    lamina_registry: RegistryProcess, context: Path, tmp_path: Path, base: str
) -> None:
    url = lamina_registry.url
    garbage = b"this is not a cacheconfig"
    digest = push_blob(url, "cachefail/corrupt", garbage)
    layer = push_blob(url, "cachefail/corrupt", b"layer")
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.BUILDKIT_CACHE_CONFIG, "digest": digest, "size": len(garbage)},
                "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": layer, "size": 5}]}
    put_manifest(url, "cachefail/corrupt", "cache", json.dumps(manifest).encode(), mt.OCI_MANIFEST)
    corrupt = f"{lamina_registry.host}/cachefail/corrupt:cache"
    _, text = run_build(context, tmp_path / "state", cache_from=(corrupt, base))  # base: an image, no cache
    assert f"WARNING: cache {corrupt} not used: cacheconfig is not valid JSON" in text
    assert f"WARNING: cache {base} not used: image has no inline cache" in text
    assert _executes_everything(text)


def test_corrupt_layer_blob_executes_the_steps_instead(
    distribution_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path
) -> None:
    base = busybox_image(distribution_registry, name="cachefail/busybox", rootfs=busybox_rootfs).reference
    context = make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n"})
    cache = f"{distribution_registry.host}/cachefail/bad:cache"
    cold, _ = run_build(context, tmp_path / "cold", cache_to=(f"type=registry,ref={cache},mode=max",))
    run_one = json.loads(cold.manifest)["layers"][3]["digest"].split(":")[1]  # base, WORKDIR, COPY, RUN one
    (data,) = (distribution_registry.root / "docker/registry/v2/blobs/sha256").glob(f"{run_one[:2]}/{run_one}/data")
    data.chmod(0o644)
    data.write_bytes(b"\0" * data.stat().st_size)  # same size, other bytes: distribution serves them as is
    (context / "Dockerfile").write_text(APP.format(base=base).replace("ran-two", "ran-two-changed"))
    warm, text = run_build(context, tmp_path / "warm", cache_from=(cache,))
    assert "unusable" in text and "does not match" in text
    assert ran(text, "ran-one") and ran(text, "ran-two-changed")  # RUN one executed again instead
    status = step_status(text)
    assert status["WORKDIR /app"] == f"CACHED ({cache})"
    again, text = run_build(context, tmp_path / "warm")  # the local state is sound: all local hits now
    assert again.digest == warm.digest and all(v == "CACHED" for k, v in step_status(text).items()
                                               if not k.startswith("FROM"))


def test_failed_export_fails_unless_ignored(
    make_lamina_registry, context: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    strict = make_lamina_registry(config='legacy_buildkit_cache = "reject"\n')
    legacy = f"type=registry,ref={strict.host}/cachefail/legacy:cache,image-manifest=false"
    with pytest.raises(CacheExportError, match=f"exporting cache to {strict.host}/cachefail/legacy:cache"):
        run_build(context, tmp_path / "state", cache_to=(legacy,))
    result, text = run_build(context, tmp_path / "state", cache_to=(f"{legacy},ignore-error=true",))
    assert "WARNING: exporting cache to" in text and "(ignored: ignore-error=true)" in text
    status = step_status(text)
    assert all(v == "CACHED" for k, v in status.items() if not k.startswith("FROM"))  # local state intact
    unreachable = f"type=registry,ref=127.0.0.1:{free_port()}/x/y:cache"
    with pytest.raises(CacheExportError, match="exporting cache to"):
        run_build(context, tmp_path / "state", cache_to=(unreachable,))
    again, _ = run_build(context, tmp_path / "state")
    assert again.digest == result.digest

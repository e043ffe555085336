"""The other export forms round-trip too: the legacy index (OCI index, Docker manifest list), a local OCI
layout directory, and the inline cache in the pushed image's config; plus the CLI flags end to end."""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from cache_helpers import make_context, ran, run_build, step_status

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.build.cache.registry import CacheExportError
from lamina.cli import main
from lamina.oci import CacheConfig
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

APP = """\
FROM {base}
COPY a.txt /a.txt
RUN cat /a.txt > /out.txt && echo ran-one
RUN echo two > /two.txt && echo ran-two
"""


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="cacheforms/busybox", rootfs=busybox_rootfs).reference


@pytest.fixture
def context(tmp_path: Path, base: str) -> Path:
    return make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n"})


def _all_cached(text: str, origin: str) -> bool:
    status = step_status(text)
    steps = [v for k, v in status.items() if not k.startswith("FROM")]
    return len(steps) == 3 and all(v == f"CACHED ({origin})" for v in steps) and not ran(text, "ran-one")


@pytest.fixture(scope="module", params=["lamina", "distribution"])
def registry(request: pytest.FixtureRequest) -> RegistryProcess:
    return request.getfixturevalue(f"{request.param}_registry")  # type: ignore[no-any-return]


@pytest.mark.parametrize(("oci", "media_type"), [("true", mt.OCI_INDEX), ("false", mt.DOCKER_MANIFEST_LIST)])
def test_legacy_index_round_trip(
    registry: RegistryProcess, base: str, tmp_path: Path, oci: str, media_type: str
) -> None:
    distribution_registry = registry
    context = make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n"})
    cache = f"{distribution_registry.host}/forms/legacy-{oci}:cache"
    cold, _ = run_build(context, tmp_path / "cold",
                        cache_to=(f"type=registry,ref={cache},mode=max,image-manifest=false,oci-mediatypes={oci}",))
    req = urllib.request.Request(f"{distribution_registry.url}/v2/forms/legacy-{oci}/manifests/cache",
                                 headers={"Accept": media_type})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Type"] == media_type
        doc = json.loads(resp.read())
    assert doc["manifests"][-1]["mediaType"] == mt.BUILDKIT_CACHE_CONFIG and len(doc["manifests"]) == 5
    warm, text = run_build(context, tmp_path / "warm", cache_from=(cache,))  # the form is detected
    assert _all_cached(text, cache) and warm.digest == cold.digest


def test_local_layout_round_trip(context: Path, tmp_path: Path) -> None:
    layout = tmp_path / "cache-dir"
    cold, _ = run_build(context, tmp_path / "cold", cache_to=(f"type=local,dest={layout},mode=max",))
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "latest"}
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_bytes())
    for blob in [manifest["config"], *manifest["layers"]]:
        assert (layout / "blobs/sha256" / blob["digest"].split(":")[1]).stat().st_size == blob["size"]
    run_build(context, tmp_path / "cold", cache_to=(f"type=local,dest={layout},tag=other",))
    tags = {m["annotations"]["org.opencontainers.image.ref.name"] for m in
            json.loads((layout / "index.json").read_text())["manifests"]}
    assert tags == {"latest", "other"}
    origin = f"local:{layout}"
    warm, text = run_build(context, tmp_path / "warm", cache_from=(f"type=local,src={layout}",))
    assert _all_cached(text, origin) and warm.digest == cold.digest
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("ran-two", "ran-two-changed"))
    pinned = f"type=local,src={layout},digest={entry['digest']}"
    _, text = run_build(context, tmp_path / "warm2", cache_from=(pinned,))
    assert ran(text, "ran-two-changed") and not ran(text, "ran-one")  # lower layers copied in from the layout


def test_inline_cache_round_trip(registry: RegistryProcess, context: Path, tmp_path: Path) -> None:
    image = f"{registry.host}/forms/inline:v1"
    cold, text = run_build(context, tmp_path / "cold", cache_to=("type=inline",), tags=(image,), push=True)
    config = json.loads(cold.config.to_bytes())
    embedded = CacheConfig.parse(base64.b64decode(config["moby.buildkit.cache.v0"]))
    assert len([r for r in embedded.records if r.results]) == 3
    image_blobs = {layer["digest"] for layer in json.loads(cold.manifest)["layers"]}
    assert {str(layer.blob) for layer in embedded.layers} <= image_blobs
    warm, text = run_build(context, tmp_path / "warm", cache_from=(image,), tags=(image,), push=True,
                           cache_to=("type=inline",))
    assert _all_cached(text, image) and warm.digest == cold.digest
    assert warm.transfer.downloaded["layer"] == 0


def test_cli_flags_and_explain_table(
    lamina_registry: RegistryProcess, context: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = f"{lamina_registry.host}/forms/cli:cache"
    args = ["build", "--progress", "plain", "--root", str(tmp_path / "one"), str(context)]
    assert main([*args, "--cache-to", f"type=registry,ref={cache},mode=max"]) == 0
    out, err = capsys.readouterr()
    assert f"exported cache to {cache}" in err
    args = ["build", "--progress", "plain", "--root", str(tmp_path / "two"), "--cache-from", cache,
            "--explain-cache", str(context)]
    assert main(args) == 0
    out2, err = capsys.readouterr()
    assert out2 == out
    table = err[err.index("STEP "):]
    assert table.count(f"CACHED  {cache}") == 3 and table.strip().endswith("3/3 steps cached")
    (context / "a.txt").write_text("changed\n")
    assert main([a if a != str(tmp_path / "two") else str(tmp_path / "three") for a in args]) == 0
    _, err = capsys.readouterr()  # an empty local state: the reason comes from the cache's fingerprints
    assert f"MISS copied files changed in the context (vs {cache})" in err
    assert "MISS parent step missed" in err
    assert main(["build", "--cache-to", "type=registry,ref=x/y,oci-mediatypes=false", str(context)]) == 1
    assert "image-manifest=true requires oci-mediatypes=true" in capsys.readouterr().err


def test_several_caches_merge_in_flag_order(context: Path, tmp_path: Path) -> None:
    """Two caches that both hold every step: the hits come from the first flag, whatever answers first."""
    one, two = tmp_path / "cache-one", tmp_path / "cache-two"
    cold, _ = run_build(context, tmp_path / "cold", cache_to=(f"type=local,dest={one}", f"type=local,dest={two}"))
    for first, second in ((one, two), (two, one)):
        warm, text = run_build(context, tmp_path / f"warm-{first.name}",
                               cache_from=(f"type=local,src={first}", f"type=local,src={second}"))
        assert _all_cached(text, f"local:{first}") and warm.digest == cold.digest
    missing = tmp_path / "missing"
    _, text = run_build(context, tmp_path / "warm-missing", cache_from=(f"type=local,src={missing}",
                                                                       f"type=local,src={two}"))
    assert f"WARNING: cache local:{missing} not used: {missing} is not an OCI layout (no index.json)" in text
    assert _all_cached(text, f"local:{two}")


def test_zstd_layers_round_trip(registry: RegistryProcess, context: Path, tmp_path: Path) -> None:
    """Layers keep the compression they were built with; force-compression refuses the gzip base layer."""
    cache = f"{registry.host}/forms/zstd:cache"
    spec = f"type=registry,ref={cache},mode=max,compression=zstd"
    with pytest.raises(CacheExportError, match="force-compression=true,compression=zstd: layer sha256:"):
        run_build(context, tmp_path / "cold", cache_to=(f"{spec},force-compression=true",), compression="zstd")
    cold, _ = run_build(context, tmp_path / "cold", cache_to=(spec,), compression="zstd")
    manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{registry.url}/v2/forms/zstd/manifests/cache", headers={"Accept": mt.OCI_MANIFEST})).read())
    assert sorted(layer["mediaType"] for layer in manifest["layers"]) == sorted(
        [mt.OCI_LAYER_GZIP] + [mt.OCI_LAYER_ZSTD] * 3)  # the busybox base is gzip, the three steps zstd
    warm, text = run_build(context, tmp_path / "warm", cache_from=(cache,), compression="zstd")
    assert _all_cached(text, cache) and warm.digest == cold.digest

"""RUN --mount=type=cache contents in the remote cache (lamina.build.cache.mountsync): exported as packs of the
cache manifest, brought back lazily on an empty state, incremental, capped, switched off; the manifest still
reads as BuildKit's importer reads it.

Real lamina registry processes and OCI layout directories, real runc; every build on a fresh state dir.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from cache_helpers import make_context, ran, run_build

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.build.cache.mountpack import MAX_PACK
from lamina.build.cache.mountsync import MOUNT_ID, MOUNT_KEY, MOUNT_PART
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

# The RUN appends a.txt to the cache's log (after saving what it found there) and, the first time, writes a
# random file of MAX_PACK bytes: a pack of its own, which later exports must not upload again.
APP = """\
FROM {base}
COPY a.txt /a.txt
RUN --mount=type=cache,target=/cache,id=appcache \\
    (cat /cache/log 2>/dev/null || true) > /seen.txt \\
 && cat /a.txt >> /cache/log \\
 && ( [ -f /cache/big ] || head -c {big} /dev/urandom > /cache/big ) \\
 && echo ran-append
"""
UNCOMPRESSED = "containerd.io/uncompressed"


@pytest.fixture(scope="module")
def registry(lamina_registry: RegistryProcess) -> RegistryProcess:
    return lamina_registry


@pytest.fixture(scope="module")
def base(registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(registry, name="cachemounts/busybox", rootfs=busybox_rootfs).reference


def _context(path: Path, base: str, text: str) -> Path:
    return make_context(path, APP.format(base=base, big=MAX_PACK), {"a.txt": text})


def _seen(out: Path) -> str:
    return (out / "seen.txt").read_text()


def _get(registry: RegistryProcess, repo: str, ref: str) -> dict:
    accept = f"{mt.OCI_MANIFEST}, {mt.OCI_INDEX}"
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def _blob(registry: RegistryProcess, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"{registry.url}/v2/{repo}/blobs/{digest}") as resp:
        return resp.read()


def _packs(manifest: dict) -> list[dict]:
    entries = manifest.get("layers", manifest.get("manifests", []))
    return [d for d in entries if MOUNT_KEY in (d.get("annotations") or {})]


def _layout_manifest(root: Path, tag: str = "latest") -> dict:
    index = json.loads((root / "index.json").read_text())
    entry = next(d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == tag)
    return json.loads((root / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes())


def _check_as_buildkit_reads(manifest: dict, config: dict) -> None:
    """What BuildKit's importer (cache/remotecache/import.go, v1/parse.go) needs: every manifest entry but the
    cacheconfig becomes a descriptor by digest; each config layer's blob must be one of them; a record's result
    points at a layer index; chains are parent indexes. A cache-mount pack is a descriptor no layer names."""
    entries = manifest.get("layers") or [d for d in manifest["manifests"] if d["mediaType"] != mt.BUILDKIT_CACHE_CONFIG]
    provider = {d["digest"]: d for d in entries}
    assert len(provider) == len(entries)
    for entry in entries:
        assert (entry.get("annotations") or {}).get(UNCOMPRESSED, "").startswith("sha256:"), entry
    layers = config["layers"]
    for layer in layers:
        assert layer["blob"] in provider, layer
        parent = layer.get("parent", 0)
        assert parent == -1 or 0 <= parent < len(layers)
    for record in config["records"]:
        for result in record.get("layers") or []:
            assert 0 <= result.get("layer", 0) < len(layers)
        for group in record.get("inputs") or []:
            for item in group:
                assert 0 <= item.get("link", 0) < len(config["records"])
    named = {layer["blob"] for layer in layers}
    packs = _packs(manifest)
    assert packs and not named & {d["digest"] for d in packs}  # no record can ever resolve to a pack


def test_registry_round_trip_incremental_and_lazy(registry: RegistryProcess, base: str, tmp_path: Path) -> None:
    ref = f"{registry.host}/cachemounts/app:cache"
    out = tmp_path / "out"
    # 1: cold, the cache starts empty; its contents are exported beside the records
    ctx = _context(tmp_path / "one", base, "one\n")
    result, progress = run_build(ctx, tmp_path / "s1", cache_to=(f"type=registry,ref={ref},mode=max",),
                                 outputs=({"type": "local", "dest": str(out)},))
    assert ran(progress, "ran-append") and _seen(out) == ""
    first = _get(registry, "cachemounts/app", "cache")
    packs = _packs(first)
    assert len(packs) == 3, first  # the random file alone between the cache directory itself and the log
    assert {p["annotations"][MOUNT_ID] for p in packs} == {"appcache"}
    assert sorted(p["annotations"][MOUNT_PART] for p in packs) == ["0/3", "1/3", "2/3"]
    config = json.loads(_blob(registry, "cachemounts/app", first["config"]["digest"]))
    _check_as_buildkit_reads(first, config)
    assert not (out / "cache" / "log").exists()  # the cache's contents are never in the image
    # 2: an empty state, one changed file: the RUN runs on the cache's previous contents, fetched lazily;
    # the unchanged random pack is neither compressed nor uploaded again
    ctx = _context(tmp_path / "two", base, "two\n")
    result, progress = run_build(ctx, tmp_path / "s2", cache_from=(ref,),
                                 cache_to=(f"type=registry,ref={ref},mode=max",),
                                 outputs=({"type": "local", "dest": str(out)},))
    assert ran(progress, "ran-append") and _seen(out) == "one\n", progress
    assert "cache mount 'appcache': 3 pack(s)" in progress and "(1 new)" in progress, progress
    assert result.transfer.uploaded["layer"] < MAX_PACK // 4, result.transfer  # the 8 MiB pack stayed put
    second = _packs(_get(registry, "cachemounts/app", "cache"))
    assert len({p["digest"] for p in second} & {p["digest"] for p in packs}) == 2  # only the log's pack changed
    # 3: an empty state, nothing changed since 2: fully cached, no pack downloaded, nothing exported again
    result, progress = run_build(ctx, tmp_path / "s3", cache_from=(ref,), cache_to=(f"type=registry,ref={ref}",))
    assert result.cached_steps == len(result.steps) and not ran(progress, "ran-append"), progress
    assert result.transfer.downloaded["layer"] == 0, result.transfer
    assert "cache mount" not in progress
    assert {p["digest"] for p in _packs(_get(registry, "cachemounts/app", "cache"))} == {p["digest"] for p in second}


def test_local_layout_cap_off_switch_and_corrupt_pack(base: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    ctx = _context(tmp_path / "one", base, "one\n")
    run_build(ctx, tmp_path / "s1", cache_to=(f"type=local,dest={cache},mode=max",))
    packs = _packs(_layout_manifest(cache))
    assert len(packs) == 3
    # a fresh state reads it back from the directory
    ctx2 = _context(tmp_path / "two", base, "two\n")
    _, progress = run_build(ctx2, tmp_path / "s2", cache_from=(f"type=local,src={cache}",),
                            cache_to=(f"type=local,dest={tmp_path / 'capped'},cache-mounts-max-size=1MiB",
                                      f"type=local,dest={tmp_path / 'off'},cache-mounts=false"),
                            outputs=({"type": "local", "dest": str(out)},))
    assert _seen(out) == "one\n", progress
    # over the cap: a warning naming the cache and its size, no pack; switched off: no pack either
    assert "WARNING: cache mount 'appcache' not exported to local:" in progress, progress
    assert "more than cache-mounts-max-size=1.0MiB" in progress
    assert _packs(_layout_manifest(tmp_path / "capped")) == []
    assert _packs(_layout_manifest(tmp_path / "off")) == []
    # cache-mounts=false over a cache that holds packs drops them
    run_build(ctx2, tmp_path / "s3", cache_to=(f"type=local,dest={cache},cache-mounts=false",), no_cache=True)
    assert _packs(_layout_manifest(cache)) == []
    # a corrupt pack: a warning, the RUN starts with an empty cache, the build succeeds
    run_build(ctx, tmp_path / "s4", cache_to=(f"type=local,dest={cache},mode=max",), no_cache=True)
    small = min(_packs(_layout_manifest(cache)), key=lambda d: d["size"])
    blob = cache / "blobs" / "sha256" / small["digest"].split(":")[1]
    blob.chmod(0o644)
    blob.write_bytes(b"not the pack")
    ctx3 = _context(tmp_path / "three", base, "three\n")
    _, progress = run_build(ctx3, tmp_path / "s5", cache_from=(f"type=local,src={cache}",),
                            outputs=({"type": "local", "dest": str(out)},))
    assert "WARNING: cache mount 'appcache': packs from local:" in progress and "it starts empty" in progress
    assert ran(progress, "ran-append") and _seen(out) == ""


def test_legacy_index_form_reads_as_buildkit_reads_it(registry: RegistryProcess, base: str, tmp_path: Path) -> None:
    ref = f"{registry.host}/cachemounts/legacy:cache"
    ctx = _context(tmp_path / "one", base, "one\n")
    run_build(ctx, tmp_path / "s1", cache_to=(f"type=registry,ref={ref},mode=max,image-manifest=false",))
    index = _get(registry, "cachemounts/legacy", "cache")
    assert index["mediaType"] == mt.OCI_INDEX
    config_desc = next(d for d in index["manifests"] if d["mediaType"] == mt.BUILDKIT_CACHE_CONFIG)
    config = json.loads(_blob(registry, "cachemounts/legacy", config_desc["digest"]))
    _check_as_buildkit_reads(index, config)
    out = tmp_path / "out"
    _, progress = run_build(_context(tmp_path / "two", base, "two\n"), tmp_path / "s2", cache_from=(ref,),
                            outputs=({"type": "local", "dest": str(out)},))
    assert _seen(out) == "one\n", progress

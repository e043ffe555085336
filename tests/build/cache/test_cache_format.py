"""Byte-level checks of what a cache export writes, against BuildKit's reference bytes and shapes.

Pure: a RecordGraph as the solver fills it (a two-stage build: builder with two steps, a final stage
that copies from it and runs one step) is planned into a cacheconfig and a manifest; the importer reads
BuildKit's own exports back.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from helpers.reference import REFERENCE_DIR
from lamina.build.cache.base import CachedResult, LayerRef
from lamina.build.cache.graph import RecordGraph, plan_export
from lamina.build.cache.importer import ImportedCache, read_cache_manifest
from lamina.oci import CacheConfig, Descriptor, Digest, FormatError, digest_of, normalize, parse_digest
from lamina.oci import mediatypes as mt

REFERENCE = REFERENCE_DIR


def _digest(text: str) -> Digest:
    return Digest("sha256", hashlib.sha256(text.encode()).hexdigest())


def _layer(name: str, media_type: str = mt.OCI_LAYER_GZIP, source: str | None = None) -> LayerRef:
    return LayerRef(Descriptor(media_type, _digest(f"blob {name}"), 100 + len(name)), _digest(f"diff {name}"),
                    f"2026-11-28T10:00:0{len(name) % 10}Z", source)


BASE = _digest("base image key")
L0 = _layer("base", mt.DOCKER_LAYER_GZIP, source="reg.example/base/busybox")
L1, L2, L3, L4 = _layer("b1"), _layer("b2x"), _layer("copy"), _layer("run")
S1, S2, F1, F2 = _digest("s1"), _digest("s2"), _digest("f1"), _digest("f2")
STEPS = [
    (S1, {"op": "run", "parent": str(BASE)}, (L0, L1)),
    (S2, {"op": "run", "parent": str(S1)}, (L0, L1, L2)),
    (F1, {"op": "copy", "parent": str(BASE), "from": {"stage": str(S2)}}, (L0, L3)),
    (F2, {"op": "run", "parent": str(F1)}, (L0, L3, L4)),
]


def _graph(order: list[int] | None = None) -> RecordGraph:
    graph = RecordGraph()
    for i in order or range(len(STEPS)):
        key, inputs, chain = STEPS[i]
        graph.add(key, inputs, CachedResult(key, chain, chain[-1].created or ""))
    return graph


def test_image_manifest_form_has_buildkits_shape() -> None:
    export = plan_export(_graph(), F2, mode="max")
    assert export is not None
    doc = json.loads(export.manifest_bytes)
    reference = json.loads((REFERENCE / "cache-manifest.image-manifest-true.json").read_text())
    # BuildKit's fields in BuildKit's order (no artifactType), then lamina's one annotation (input fingerprints)
    assert list(doc) == [*reference, "annotations"] and list(doc["annotations"]) == ["dev.lamina.cache.inputs"]
    assert doc["mediaType"] == mt.OCI_MANIFEST and export.manifest_media_type == mt.OCI_MANIFEST
    assert doc["config"] == {"mediaType": mt.BUILDKIT_CACHE_CONFIG, "digest": str(digest_of(export.config_bytes)),
                             "size": len(export.config_bytes)}
    digests = [entry["digest"] for entry in doc["layers"]]
    assert digests == sorted(digests) and len(digests) == 5
    for entry in doc["layers"]:
        assert list(entry) == list(reference["layers"][0])
        assert entry["mediaType"] == mt.OCI_LAYER_GZIP  # the Docker-typed base layer is renamed, same bytes
        assert list(entry["annotations"]) == ["buildkit/createdat", "containerd.io/uncompressed"]
    by_digest = {entry["digest"]: entry for entry in doc["layers"]}
    assert by_digest[str(L3.descriptor.digest)]["annotations"]["containerd.io/uncompressed"] == str(L3.diff_id)
    assert by_digest[str(L3.descriptor.digest)]["annotations"]["buildkit/createdat"] == L3.created


def test_config_is_sorted_with_parent_chains_and_links() -> None:
    export = plan_export(_graph(), F2, mode="max")
    assert export is not None
    config = CacheConfig.parse(export.config_bytes)
    assert config.to_bytes() == export.config_bytes and normalize(config) == config
    assert [str(r.digest) for r in config.records] == sorted(str(r.digest) for r in config.records)
    assert [str(x.blob) for x in config.layers] == sorted(str(x.blob) for x in config.layers)
    records = {r.digest: r for r in config.records}
    assert set(records) == {BASE, S1, S2, F1, F2}
    assert records[BASE].results == () and records[BASE].inputs == ()  # the base image: a pure link
    for key, _, chain in STEPS:
        (result,) = records[key].results
        assert config.layer_chain(result.layer) == [ref.descriptor.digest for ref in chain]
        assert result.created_at == chain[-1].created
    index = {r.digest: i for i, r in enumerate(config.records)}
    assert [[i.link for i in g] for g in records[F1].inputs] == [[index[BASE]], [index[S2]]]
    assert [[i.link for i in g] for g in records[F2].inputs] == [[index[F1]]]
    assert b'"parent":-1' in export.config_bytes  # the root layer, as Go writes it


def test_two_exports_are_byte_identical_whatever_the_order() -> None:
    first = plan_export(_graph(), F2, mode="max")
    order = list(range(len(STEPS)))
    random.Random(7).shuffle(order)
    second = plan_export(_graph(order), F2, mode="max")
    assert first is not None and second is not None
    assert (first.config_bytes, first.manifest_bytes) == (second.config_bytes, second.manifest_bytes)


def test_min_keeps_the_final_chain_and_links_the_rest() -> None:
    high, low = plan_export(_graph(), F2, mode="max"), plan_export(_graph(), F2, mode="min")
    assert high is not None and low is not None
    assert [ref.descriptor.digest for ref in low.layers] == sorted(r.descriptor.digest for r in (L0, L3, L4))
    assert len(high.layers) == 5 and len(low.layers) == 3  # BuildKit's multistage reference: 6 vs 3
    config = CacheConfig.parse(low.config_bytes)
    with_results = {r.digest for r in config.records if r.results}
    assert with_results == {F1, F2}
    assert {r.digest for r in config.records} == {BASE, S1, S2, F1, F2}  # the builder stage stays as links
    reference = CacheConfig.parse((REFERENCE / "multistage-min.cacheconfig.json").read_bytes())
    assert sum(1 for r in reference.records if r.results) == 2 and len(reference.layers) == 3


def test_nothing_to_export_is_none_never_an_empty_manifest() -> None:
    graph = RecordGraph()
    assert plan_export(graph, F2, mode="max") is None
    graph.add(S1, {"op": "workdir", "parent": str(BASE)}, CachedResult(S1, (), ""))
    assert plan_export(graph, S1, mode="min") is None


@pytest.mark.parametrize(("oci", "index_type", "layer_type"), [
    (True, mt.OCI_INDEX, mt.OCI_LAYER_GZIP), (False, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_LAYER_GZIP)])
def test_legacy_index_form(oci: bool, index_type: str, layer_type: str) -> None:
    export = plan_export(_graph(), F2, mode="min", image_manifest=False, oci_mediatypes=oci)
    assert export is not None
    doc = json.loads(export.manifest_bytes)
    name = "legacy-oci-index" if oci else "legacy-docker-list"
    reference = json.loads((REFERENCE / f"cache-manifest.{name}.json").read_text())
    assert list(doc) == [*reference, "annotations"] and doc["mediaType"] == index_type == reference["mediaType"]
    assert [m["mediaType"] for m in doc["manifests"]] == [layer_type] * 3 + [mt.BUILDKIT_CACHE_CONFIG]
    assert {m["mediaType"] for m in reference["manifests"][:-1]} == {layer_type}
    parsed = read_cache_manifest(export.manifest_bytes, export.manifest_media_type)
    assert parsed.form == "legacy-index" and parsed.config.digest == digest_of(export.config_bytes)


@pytest.mark.parametrize("name", ["legacy-oci-index", "legacy-docker-list"])
def test_buildkits_legacy_exports_are_detected(name: str) -> None:
    data = (REFERENCE / f"cache-manifest.{name}.json").read_bytes()
    manifest = read_cache_manifest(data, json.loads(data)["mediaType"])
    assert manifest.form == "legacy-index" and len(manifest.layers) == 8
    assert manifest.config.media_type == mt.BUILDKIT_CACHE_CONFIG and manifest.config.size == 2722


def test_buildkits_export_imports_lazily() -> None:
    data = (REFERENCE / "cache-manifest.image-manifest-true.json").read_bytes()
    manifest = read_cache_manifest(data, mt.OCI_MANIFEST)
    assert manifest.form == "image-manifest"
    config = CacheConfig.parse((REFERENCE / "cacheconfig.raw.json").read_bytes())
    cache = ImportedCache("reg/app:cache", config, manifest.layers, "reg/app")
    hit = cache.lookup(parse_digest("sha256:33fad743dcb2afe806dce7d9d5598f654df9556dddb8937791eb38e65bd0322b"))
    assert hit is not None and hit.origin == "reg/app:cache"
    assert len(hit.layers) == 7 and hit.layers[0].descriptor.size == 1031486
    assert all(ref.source == "reg/app" and ref.descriptor.media_type == mt.OCI_LAYER_GZIP for ref in hit.layers)
    assert hit.layers[0].diff_id == parse_digest(
        "sha256:3357427a0f1d4a6453c8a0b47f509b561c5871e233c7f4fa110a771d26c715a9")
    assert cache.lookup(parse_digest("sha256:02659b9ce8fe3f3977fe057ca0204d23a122aa3b9df3d47391a7071d3300ea02")) is None


def test_our_export_reads_back_into_the_same_chains() -> None:
    export = plan_export(_graph(), F2, mode="max")
    assert export is not None
    manifest = read_cache_manifest(export.manifest_bytes, mt.OCI_MANIFEST)
    cache = ImportedCache("r/a:c", CacheConfig.parse(export.config_bytes), manifest.layers, "r/a")
    for key, _, chain in STEPS:
        hit = cache.lookup(key)
        assert hit is not None
        assert [(r.descriptor.digest, r.diff_id, r.created) for r in hit.layers] == [
            (r.descriptor.digest, r.diff_id, r.created) for r in chain]
    cache.forget_blob(L3.descriptor.digest)  # a corrupt blob: chains through it miss from now on
    assert cache.lookup(F2) is None and cache.lookup(S2) is not None


def test_foreign_manifests_are_refused_and_a_big_config_imports() -> None:
    image = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.example+json", "digest": str(_digest("x")), "size": 1}, "layers": []}
    with pytest.raises(FormatError, match="not a build cache"):
        read_cache_manifest(json.dumps(image).encode(), mt.OCI_MANIFEST)
    graph = RecordGraph()
    for stage in range(600):  # a long-lived mode=max cache: 600 stages of 10 steps, ~1.5 MiB of config
        parent, chain = BASE, (L0,)
        for step in range(10):
            key = _digest(f"stage {stage} step {step}")
            chain = (*chain, _layer(f"l{stage}.{step}"))
            graph.add(key, {"op": "run", "parent": str(parent)}, CachedResult(key, chain, "2026-11-28T10:00:00Z"))
            parent = key
    export = plan_export(graph, parent, mode="max")
    assert export is not None and len(export.config_bytes) > 1 << 20
    manifest = read_cache_manifest(export.manifest_bytes, mt.OCI_MANIFEST)
    cache = ImportedCache("r/a:c", CacheConfig.parse(export.config_bytes), manifest.layers, "r/a")
    hit = cache.lookup(parent)
    assert hit is not None and len(hit.layers) == 11 and len(cache) == 6001


def test_fingerprints_explain_a_miss_without_leaking_values() -> None:
    from lamina.build import cachekey
    from lamina.build.ops import RunStep

    step = RunStep(argv=("/bin/sh", "-c", "make"), env=("TOKEN=s3cret", "MODE=fast"), user="", workdir="/")
    graph = RecordGraph()
    inputs = cachekey.run_inputs(step, BASE)
    key = cachekey.key_of(inputs)
    graph.add(key, inputs, CachedResult(key, (L0, L1), "2026-11-28T10:00:00Z"))
    export = plan_export(graph, key, mode="min")
    assert export is not None and b"s3cret" not in export.manifest_bytes
    manifest = read_cache_manifest(export.manifest_bytes, mt.OCI_MANIFEST)
    cache = ImportedCache("r/a:c", CacheConfig.parse(export.config_bytes), manifest.layers, "r/a",
                          manifest.annotations)
    changed = RunStep(argv=step.argv, env=("TOKEN=s3cret", "MODE=slow"), user="", workdir="/")
    assert cache.explain(str(BASE), cachekey.run_inputs(changed, BASE)) == "env/arg MODE changed (vs r/a:c)"
    other = RunStep(argv=("/bin/sh", "-c", "make all"), env=step.env, user="", workdir="/")
    assert cache.explain(str(BASE), cachekey.run_inputs(other, BASE)) == "argv changed (vs r/a:c)"
    assert cache.explain(str(S1), cachekey.run_inputs(other, S1)) is None  # nothing on that parent


def test_force_compression_refuses_layers_in_another_compression() -> None:
    from lamina.build.cache.registry import check_compression
    from lamina.build.cacheopts import parse_cache_to

    export = plan_export(_graph(), F2, mode="min")
    assert export is not None
    check_compression(export, parse_cache_to("type=registry,ref=r/a:c,compression=zstd"))  # not forced: kept
    check_compression(export, parse_cache_to("type=registry,ref=r/a:c,compression=gzip,force-compression=true"))
    with pytest.raises(ValueError, match="force-compression=true,compression=zstd: layer sha256:"):
        check_compression(export, parse_cache_to("type=registry,ref=r/a:c,compression=zstd,force-compression=true"))


def test_fingerprints_say_the_base_image_changed() -> None:
    from lamina.build import cachekey
    from lamina.build.ops import RunStep
    from lamina.oci import Platform

    platform = Platform("amd64", "linux")
    old_base = cachekey.image_inputs(_digest("old manifest"), platform)
    new_base = cachekey.image_inputs(_digest("new manifest"), platform)
    step = RunStep(argv=("/bin/sh", "-c", "make"), env=(), user="", workdir="/")
    graph = RecordGraph()
    graph.add(cachekey.key_of(old_base), old_base, None)  # how the solver links the base image
    inputs = cachekey.run_inputs(step, cachekey.key_of(old_base))
    graph.add(cachekey.key_of(inputs), inputs, CachedResult(cachekey.key_of(inputs), (L0, L1), "t"))
    export = plan_export(graph, cachekey.key_of(inputs), mode="min")
    assert export is not None
    manifest = read_cache_manifest(export.manifest_bytes, mt.OCI_MANIFEST)
    cache = ImportedCache("r/a:c", CacheConfig.parse(export.config_bytes), manifest.layers, "r/a",
                          manifest.annotations)
    new_key = cachekey.key_of(new_base)
    assert cache.explain(str(new_key), cachekey.run_inputs(step, new_key)) == (
        "base image changed (this step is cached on another base image digest) (vs r/a:c)")

"""A merged cache keeps BuildKit's format: BuildKit's own export (tests/data/buildkit-cache)
as the cache a ref holds, merged with a lamina export and pruned — pure, checked against the shapes
and facts of the reference captures (media types, annotations, sorting, parent encoding, fields)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from helpers.reference import REFERENCE_DIR
from lamina.build.cache.base import CachedResult, LayerRef
from lamina.build.cache.cumulative import NO_CACHE, CurrentCache, combine, missing_results
from lamina.build.cache.graph import CacheExport, RecordGraph, plan_export
from lamina.build.cache.importer import ImportedCache, read_cache_manifest
from lamina.build.cacheopts import parse_cache_to
from lamina.oci import CacheConfig, Descriptor, Digest, normalize
from lamina.oci import mediatypes as mt
from lamina.oci.cacheconfig import LAST_USED_FIELD
from lamina.oci.cachemerge import result_keys

DATA = REFERENCE_DIR
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
REF = "reg.example/app/cache:main"


def _digest(text: str) -> Digest:
    return Digest("sha256", hashlib.sha256(text.encode()).hexdigest())


def _buildkit() -> CurrentCache:
    data = (DATA / "cache-manifest.image-manifest-true.json").read_bytes()
    manifest = read_cache_manifest(data, mt.OCI_MANIFEST)
    config = CacheConfig.parse((DATA / "cacheconfig.raw.json").read_bytes().strip())
    return CurrentCache(Digest("sha256", hashlib.sha256(data).hexdigest()), config,
                        {d.digest: d for d in manifest.layers})


def _ours(name: str = "app") -> CacheExport:
    def layer(n: str) -> LayerRef:
        return LayerRef(Descriptor(mt.OCI_LAYER_GZIP, _digest(f"{name} blob {n}"), 1000), _digest(f"{name} diff {n}"),
                        "2026-12-07T11:00:00Z")

    base, one, two = layer("base"), layer("one"), layer("two")
    k0, k1, k2 = _digest(f"{name} from"), _digest(f"{name} run one"), _digest(f"{name} run two")
    graph = RecordGraph()
    graph.add(k0, {"op": "image"}, CachedResult(k0, (base,), "2026-12-07T11:00:00Z"))
    graph.add(k1, {"op": "run", "parent": str(k0)}, CachedResult(k1, (base, one), "2026-12-07T11:00:00Z"))
    graph.add(k2, {"op": "run", "parent": str(k1)}, CachedResult(k2, (base, one, two), "2026-12-07T11:00:00Z"))
    export = plan_export(graph, k2, mode="max")
    assert export is not None
    return export


def test_merged_with_buildkits_own_cache_keeps_its_shape() -> None:
    current, ours = _buildkit(), _ours()
    final = combine(ours, current, parse_cache_to(f"type=registry,ref={REF},mode=max"), NOW)
    assert final is not None
    reference = json.loads((DATA / "cache-manifest.image-manifest-true.json").read_text())
    doc = json.loads(final.manifest_bytes)
    assert final.manifest_media_type == mt.OCI_MANIFEST
    assert [k for k in doc if k != "annotations"] == list(reference)  # BuildKit's fields, its order, no artifactType
    assert doc["config"]["mediaType"] == reference["config"]["mediaType"] == mt.BUILDKIT_CACHE_CONFIG
    digests = [layer["digest"] for layer in doc["layers"]]
    assert digests == sorted(digests) and len(digests) == len(reference["layers"]) + 3  # sorted by digest, unique
    for layer in doc["layers"]:
        assert set(layer["annotations"]) == set(reference["layers"][0]["annotations"])  # createdat + uncompressed
        assert layer["mediaType"] == mt.OCI_LAYER_GZIP
    for theirs in reference["layers"]:  # BuildKit's descriptors carried over unchanged
        assert theirs in doc["layers"]
    config = json.loads(final.config_bytes)
    assert set(config) == {"layers", "records"}
    assert [r["digest"] for r in config["records"]] == sorted(r["digest"] for r in config["records"])
    for layer in config["layers"]:
        assert set(layer) <= {"blob", "parent"} and layer.get("parent", 0) != layer["blob"]
    for record in config["records"]:
        assert set(record) <= {"layers", "digest", "inputs"}
        for result in record.get("layers", []):
            assert set(result) <= {"layer", "createdAt", LAST_USED_FIELD}
    assert normalize(final.config) == final.config
    assert result_keys(current.config) | result_keys(ours.config) == result_keys(final.config)
    # lamina reads it back: BuildKit's records and ours, every chain resolvable
    imported = ImportedCache(REF, final.config, final.descriptors, "reg.example/app/cache")
    for record in final.config.records:
        if record.results:
            assert imported.lookup(record.digest) is not None


def test_only_this_builds_results_get_a_last_used_time() -> None:
    final = combine(_ours(), _buildkit(), parse_cache_to(f"type=registry,ref={REF}"), NOW)
    assert final is not None
    stamped = {str(r.digest) for r in final.config.records for x in r.results if x.last_used}
    assert stamped == {str(r.digest) for r in _ours().config.records if r.results}


def test_merge_false_replaces_and_retention_prunes() -> None:
    ours = _ours()
    replaced = combine(ours, _buildkit(), parse_cache_to(f"type=registry,ref={REF},merge=false"), NOW)
    assert replaced is not None and result_keys(replaced.config) == result_keys(ours.config)
    assert [d.digest for d in replaced.descriptors] == sorted(ref.descriptor.digest for ref in ours.layers)
    # BuildKit's records were created 2026-11-28: a week of max-age drops them, this build's stay
    aged = combine(ours, _buildkit(), parse_cache_to(f"type=registry,ref={REF},max-age=7d"), NOW)
    assert aged is not None and result_keys(aged.config) == result_keys(ours.config)
    # 2500 bytes: the newest results first; ours (used now) win over BuildKit's older ones
    small = combine(ours, _buildkit(), parse_cache_to(f"type=registry,ref={REF},max-size=2500"), NOW)
    assert small is not None and sum(d.size for d in small.descriptors) <= 2500
    assert len(small.layers) == 2  # base + one: the top layer (1000 bytes more) did not fit


def test_missing_results_counts_only_this_builds_records() -> None:
    ours = _ours()
    final = combine(ours, NO_CACHE, parse_cache_to(f"type=registry,ref={REF}"), NOW)
    other = combine(_ours("other"), NO_CACHE, parse_cache_to(f"type=registry,ref={REF}"), NOW + timedelta(seconds=1))
    assert final is not None and other is not None
    assert missing_results(ours.config, final.config, final.config) == 0
    assert missing_results(ours.config, final.config, other.config) == 3

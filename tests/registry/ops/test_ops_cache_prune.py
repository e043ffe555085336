"""The ``cache_records_unused_days`` lifecycle rule: a BuildKit cache manifest rewritten under its tag
without the records unused for too long — their unique layers leave the manifest, shared ones stay, the
cacheconfig still parses — with a conditional tag update that never overwrites a concurrent export; both
export forms; pure, on a real storage root, and end to end (``lamina registry lifecycle`` beside a real
``lamina registry serve``)."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from opstools import ops_from_toml

from helpers.api import push_blob, put_manifest
from helpers.registries import start_lamina
from lamina.oci import (
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    Descriptor,
    Digest,
    ImageIndex,
    ImageManifest,
    digest_of,
    parse_manifest,
)
from lamina.oci import mediatypes as mt
from lamina.registry.cacheprune import pruned_manifest
from lamina.registry.config import ConfigError, RegistryConfig
from lamina.registry.lifecycle import apply_lifecycle, format_result
from lamina.registry.validation import check_manifest
from lamina.store import Storage, open_storage

NOW = datetime(2026, 12, 1, tzinfo=UTC)
RULE = '[[lifecycle.rules]]\nrepositories = ["ci/**"]\ncache_records_unused_days = 14\n'
INPUTS = "dev.lamina.cache.inputs"


def stamp(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key(name: str) -> Digest:
    return digest_of(name.encode())


@dataclasses.dataclass
class Cache:
    """A cache manifest and every blob it needs: base layer S shared by a stale and a fresh record."""

    blobs: dict[str, bytes]  # name -> bytes
    config: bytes
    manifest: bytes
    media_type: str

    def digest(self, name: str) -> Digest:
        return digest_of(self.blobs[name])


def make_cache(records: dict[str, tuple[str, float | None, float]], *, legacy: bool = False,
               extra_blob: str | None = None) -> Cache:
    """``records``: step name -> (top layer name, days since last use or None, days since creation); every
    layer sits on the shared base "S"; record "base" (result: S alone) is every step's input 0."""
    names = sorted({"S", *(top for top, _, _ in records.values())} | ({extra_blob} if extra_blob else set()))
    blobs = {name: f"gzip bytes of layer {name}".encode() * 3 for name in names}
    order = ["S", *sorted(top for top in {top for top, _, _ in records.values()} if top != "S")]
    layers = [CacheLayer(digest_of(blobs[n]), -1 if n == "S" else 0) for n in order]
    recs = [CacheRecord(key("base"), (CacheResult(0, stamp(60), stamp(1)),))]
    for name, (top, used, created) in sorted(records.items()):
        recs.append(CacheRecord(
            key(name),
            (CacheResult(order.index(top), stamp(created), None if used is None else stamp(used)),),
            ((CacheInput(0),),),
        ))
    config = CacheConfig(tuple(layers), tuple(recs)).to_bytes()
    fingerprints = {str(key(n)): {"op": "run", "argv": n} for n in ["base", *records]}
    annotation = base64.b64encode(zlib.compress(json.dumps(fingerprints, sort_keys=True).encode())).decode()
    descs = [{"mediaType": mt.OCI_LAYER_GZIP, "digest": str(digest_of(blobs[n])), "size": len(blobs[n]),
              "annotations": {"buildkit/createdat": stamp(60)}} for n in names]
    config_desc = {"mediaType": mt.BUILDKIT_CACHE_CONFIG, "digest": str(digest_of(config)), "size": len(config)}
    if legacy:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*descs, config_desc],
                               "annotations": {INPUTS: annotation}}
    else:
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc, "layers": descs,
               "annotations": {INPUTS: annotation}}
    return Cache(blobs, config, json.dumps(doc).encode(), mt.OCI_INDEX if legacy else mt.OCI_MANIFEST)


STALE_AND_FRESH = {
    "stale": ("L_stale", 40, 60),     # lamina.lastUsedAt 40 days ago
    "buildkit": ("L_bk", None, 30),   # written by BuildKit: no lastUsedAt, created 30 days ago
    "fresh": ("L_fresh", 2, 50),      # created long ago, used 2 days ago
    "on-base": ("S", 50, 50),         # a stale result whose only layer is the shared base
}


def _records(config: CacheConfig) -> set[Digest]:
    return {r.digest for r in config.records}


@pytest.mark.parametrize("legacy", [False, True])
def test_stale_records_and_their_unique_layers_go_shared_layers_stay(legacy: bool) -> None:
    cache = make_cache(STALE_AND_FRESH, legacy=legacy)
    manifest = parse_manifest(cache.manifest, cache.media_type)
    pruned = pruned_manifest(manifest, cache.config, timedelta(days=14), NOW)
    assert pruned is not None
    config = CacheConfig.parse(pruned.config)
    assert _records(config) == {key("base"), key("fresh")}
    assert pruned.records == (5, 2) and pruned.layers == (4, 2)
    kept_blobs = [str(layer.blob) for layer in config.layers]
    assert sorted(kept_blobs) == sorted(str(cache.digest(n)) for n in ("S", "L_fresh"))
    fresh = next(r for r in config.records if r.digest == key("fresh"))
    assert config.layer_chain(fresh.results[0].layer) == [cache.digest("S"), cache.digest("L_fresh")]
    assert fresh.results[0].last_used == stamp(2) and fresh.inputs[0][0].link == _index(config, key("base"))
    rewritten = parse_manifest(pruned.manifest, pruned.media_type)
    if legacy:
        descs = rewritten.manifests  # type: ignore[union-attr]
        assert descs[-1].media_type == mt.BUILDKIT_CACHE_CONFIG and descs[-1].digest == digest_of(pruned.config)
        layers = descs[:-1]
    else:
        assert rewritten.config.digest == digest_of(pruned.config)  # type: ignore[union-attr]
        assert rewritten.config.media_type == mt.BUILDKIT_CACHE_CONFIG  # type: ignore[union-attr]
        layers = rewritten.layers  # type: ignore[union-attr]
    assert {d.digest for d in layers} == {cache.digest("S"), cache.digest("L_fresh")}
    assert all(d.annotations == {"buildkit/createdat": stamp(60)} for d in layers)
    prints = json.loads(zlib.decompress(base64.b64decode(rewritten.annotations[INPUTS])))  # type: ignore[index]
    assert set(prints) == {str(key("base")), str(key("fresh"))}


def _index(config: CacheConfig, digest: Digest) -> int:
    return next(i for i, r in enumerate(config.records) if r.digest == digest)


def test_a_cache_without_stale_records_is_left_alone() -> None:
    cache = make_cache({"fresh": ("L_fresh", 2, 50)})
    assert pruned_manifest(parse_manifest(cache.manifest), cache.config, timedelta(days=14), NOW) is None
    assert pruned_manifest(parse_manifest(cache.manifest), cache.config, timedelta(days=1), NOW) is not None


# -- on a real storage root ----------------------------------------------------------------------------


def push(storage: Storage, repository: str, tag: str, cache: Cache) -> str:
    """Store the blobs and the manifest as a PUT would (the registry's own validation builds the record)."""
    for data in [*cache.blobs.values(), cache.config]:
        storage.blobs.put(digest_of(data), data)
        storage.metadata.link_blob(repository, digest_of(data), len(data))
    checked = check_manifest(repository, tag, cache.manifest, cache.media_type, RegistryConfig(root=storage.paths.root))
    storage.metadata.put_manifest(checked.record, checked.references, checked.tag)
    return str(checked.record.digest)


def current(storage: Storage, repository: str, tag: str) -> tuple[str, CacheConfig, set[Digest]]:
    record = storage.metadata.get_manifest(repository, tag)
    assert record is not None
    manifest = parse_manifest(record.content, record.media_type)
    config_desc = manifest.config  # type: ignore[union-attr]
    path = storage.blobs.local_path(config_desc.digest)
    assert path is not None and storage.metadata.linked_blob_size(repository, config_desc.digest) is not None
    layers = {d.digest for d in manifest.layers}  # type: ignore[union-attr]
    return str(record.digest), CacheConfig.parse(path.read_bytes()), layers


def test_lifecycle_rewrites_the_tag_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    cache = make_cache(STALE_AND_FRESH)
    old = push(storage, "ci/app", "cache", cache)
    push(storage, "prod/app", "cache", cache)  # no rule matches prod/**
    settings = ops_from_toml(RULE).lifecycle
    preview = apply_lifecycle(storage, settings, dry_run=True, now=NOW.timestamp())
    assert [(p.repository, p.tag, p.records, p.layers) for p in preview.pruned] == [("ci/app", "cache", (5, 2), (4, 2))]
    assert "would prune ci/app:cache" in format_result(preview, dry_run=True)[0]
    assert current(storage, "ci/app", "cache")[0] == old
    done = apply_lifecycle(storage, settings, now=NOW.timestamp())
    assert len(done.pruned) == 1 and done.expired == []
    digest, config, layers = current(storage, "ci/app", "cache")
    assert digest == done.pruned[0].new_digest != old
    assert _records(config) == {key("base"), key("fresh")} and layers == {cache.digest("S"), cache.digest("L_fresh")}
    record = storage.metadata.get_manifest("ci/app", "cache")
    before = storage.metadata.get_manifest("ci/app", old)
    assert record is not None and before is not None and before.tags == ()  # the old one waits for GC, untagged
    assert record.pushed_at == before.pushed_at  # a rewrite is not a push: cache_unused_days still sees the age
    assert current(storage, "prod/app", "cache")[0] == old
    assert apply_lifecycle(storage, settings, now=NOW.timestamp()).pruned == []  # nothing more to drop


def test_a_cache_with_nothing_left_is_deleted_not_emptied(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    cache = make_cache({"stale": ("L_stale", 40, 60)})
    old = push(storage, "ci/app", "cache", cache)
    done = apply_lifecycle(storage, ops_from_toml(RULE).lifecycle, now=(NOW + timedelta(days=30)).timestamp())
    assert [(p.old_digest, p.new_digest) for p in done.pruned] == [(old, None)]
    assert storage.metadata.get_manifest("ci/app", "cache") is None
    assert "nothing left" in format_result(done, dry_run=False)[0]


def test_a_broken_cache_is_skipped_with_a_warning_and_the_others_still_pruned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(tmp_path / "root")
    cache = make_cache(STALE_AND_FRESH)
    push(storage, "ci/app", "cache", cache)
    broken = push(storage, "ci/broken", "cache", cache)
    storage.metadata.unlink_blob("ci/broken", digest_of(cache.config), force=True)  # its cacheconfig is gone
    done = apply_lifecycle(storage, ops_from_toml(RULE).lifecycle, now=NOW.timestamp())
    assert [(p.repository, p.tag) for p in done.pruned] == [("ci/app", "cache")]
    assert current_digest(storage, "ci/broken") == broken
    assert "ci/broken:cache is not a cache lamina can prune" in caplog.text and "not in the store" in caplog.text


def current_digest(storage: Storage, repository: str) -> str:
    record = storage.metadata.get_manifest(repository, "cache")
    assert record is not None
    return str(record.digest)


class RacingMetadata:
    """The real store, but the first read of the tag is followed by a concurrent export moving it."""

    def __init__(self, storage: Storage, export: Cache) -> None:
        self.inner, self.storage, self.export, self.reads = storage.metadata, storage, export, 0

    def get_manifest(self, repository: str, reference: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        found = self.inner.get_manifest(repository, reference)
        if self.reads == 1:
            push(self.storage, repository, reference, self.export)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_concurrent_export_is_never_overwritten(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    push(storage, "ci/app", "cache", make_cache(STALE_AND_FRESH))
    merged = make_cache({**STALE_AND_FRESH, "new-pr": ("L_pr", 0, 0)})  # what a merging export wrote meanwhile
    racing = RacingMetadata(storage, merged)
    done = apply_lifecycle(dataclasses.replace(storage, metadata=racing), ops_from_toml(RULE).lifecycle,  # type: ignore[arg-type]
                           now=NOW.timestamp())
    assert racing.reads == 2  # 412 on the first rewrite, read again, pruned the new export
    assert [p.records for p in done.pruned] == [(6, 3)]
    _, config, layers = current(storage, "ci/app", "cache")
    assert _records(config) == {key("base"), key("fresh"), key("new-pr")}
    assert layers == {merged.digest("S"), merged.digest("L_fresh"), merged.digest("L_pr")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[lifecycle.rules]]\nrepositories = ["a"]\ncache_records_unused_days = -1\n', "cache_records_unused_days"),
        ('[[lifecycle.rules]]\nrepositories = ["a"]\ncache_records_unused_days = "2w"\n', "cache_records_unused_days"),
    ],
)
def test_rule_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ops_from_toml(text)


# -- end to end ----------------------------------------------------------------------------------------


def test_lamina_registry_lifecycle_prunes_a_cache_a_running_server_serves(tmp_path: Path) -> None:
    cache = make_cache(STALE_AND_FRESH)
    server = start_lamina(tmp_path, workers=2)
    try:
        for data in [*cache.blobs.values(), cache.config]:
            push_blob(server.url, "ci/app", data)
        put_manifest(server.url, "ci/app", "cache", cache.manifest, cache.media_type)
        config_file = tmp_path / "lifecycle.toml"
        config_file.write_text(RULE.replace("14", str((datetime.now(UTC) - NOW).days + 14)))
        run = subprocess.run(
            [sys.executable, "-m", "lamina.cli", "registry", "lifecycle", "--root", str(server.root),
             "--config", str(config_file)], capture_output=True, text=True, timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert "pruned ci/app:cache" in run.stdout and "records 5 -> 2, layers 4 -> 2" in run.stdout
        got = requests.get(f"{server.url}/v2/ci/app/manifests/cache", headers={"Accept": mt.OCI_MANIFEST}, timeout=30)
        assert got.status_code == 200 and got.headers["ETag"] == f'"{digest_of(got.content)}"'
        manifest = parse_manifest(got.content, mt.OCI_MANIFEST)
        assert {d.digest for d in manifest.layers} == {cache.digest("S"), cache.digest("L_fresh")}  # type: ignore[union-attr]
        config_url = f"{server.url}/v2/ci/app/blobs/{manifest.config.digest}"  # type: ignore[union-attr]
        config = CacheConfig.parse(requests.get(config_url, timeout=30).content)
        assert _records(config) == {key("base"), key("fresh")}
    finally:
        server.stop()


@pytest.mark.parametrize("form", ["image_manifest", "legacy_oci_index", "legacy_docker_list"])
def test_a_cache_buildkit_wrote_is_pruned_by_created_at_in_every_form(form: str) -> None:
    """BuildKit v0.32's own export (no lastUsedAt): results age from createdAt; the rewritten manifest
    lists exactly the blobs of the kept results' chains, in the form and media types it came in."""
    from helpers.buildkit_cache import buildkit_cache

    reference = buildkit_cache()
    blob = getattr(reference, form)
    original = CacheConfig.parse(reference.cacheconfig.data)
    created = sorted({r.created_at for rec in original.records for r in rec.results if r.created_at})
    cutoff = created[len(created) // 2]  # half the results are older than this
    now = datetime.fromisoformat(cutoff[:26] + "+00:00") + timedelta(days=14)
    pruned = pruned_manifest(parse_manifest(blob.data, blob.media_type), reference.cacheconfig.data,
                             timedelta(days=14), now)
    assert pruned is not None and pruned.media_type == blob.media_type
    config = CacheConfig.parse(pruned.config)
    kept = {(str(rec.digest), r.created_at) for rec in config.records for r in rec.results}
    wanted = {(str(rec.digest), r.created_at) for rec in original.records for r in rec.results
              if r.created_at and r.created_at[:26] >= cutoff[:26]}
    assert kept == wanted and 0 < len(kept) < len(created)
    chains = {d for rec in config.records for r in rec.results for d in config.layer_chain(r.layer)}
    listed = _layers(parse_manifest(pruned.manifest, pruned.media_type))
    assert {d.digest for d in listed} == chains
    before = {d.digest: d for d in _layers(parse_manifest(blob.data, blob.media_type))}
    assert all(before[d.digest] == d and before[d.digest].media_type == d.media_type for d in listed)


def _layers(manifest: ImageManifest | ImageIndex) -> tuple[Descriptor, ...]:
    if isinstance(manifest, ImageManifest):
        return manifest.layers
    return tuple(d for d in manifest.manifests if d.media_type != mt.BUILDKIT_CACHE_CONFIG)


def test_the_server_applies_the_rule_on_its_schedule(tmp_path: Path) -> None:
    cache = make_cache(STALE_AND_FRESH)
    days = (datetime.now(UTC) - NOW).days + 14
    config = f"[lifecycle]\ninterval_seconds = 0.2\n{RULE.replace('14', str(days))}"
    server = start_lamina(tmp_path, workers=2, config=config)
    try:
        for data in [*cache.blobs.values(), cache.config]:
            push_blob(server.url, "ci/app", data)
        put_manifest(server.url, "ci/app", "cache", cache.manifest, cache.media_type)
        deadline = time.monotonic() + 20
        metrics = ""
        while time.monotonic() < deadline and "lamina_lifecycle_cache_tags_pruned_total 1" not in metrics:
            time.sleep(0.2)
            metrics = requests.get(f"{server.url}/metrics", timeout=30).text
        assert "lamina_lifecycle_cache_tags_pruned_total 1" in metrics
        got = requests.get(f"{server.url}/v2/ci/app/manifests/cache", headers={"Accept": mt.OCI_MANIFEST}, timeout=30)
        assert {d.digest for d in _layers(parse_manifest(got.content))} == {cache.digest("S"), cache.digest("L_fresh")}
    finally:
        server.stop()

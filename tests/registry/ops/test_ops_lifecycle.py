"""Lifecycle rules: each rule expires what it should and keeps what it must (pure evaluation, then a
real run and a dry run on a real storage root)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opstools import ops_from_toml

from lamina.registry.config import ConfigError
from lamina.registry.lifecycle import LifecycleRule, apply_lifecycle, evaluate, format_result
from lamina.store import ManifestRecord, ManifestReference, open_storage
from lamina.store.views import ManifestInfo, Reference

DAY = 86400.0
NOW = 1_800_000_000.0


def info(digest: str, *, tags: tuple[str, ...] = (), kind: str = "image", age_days: float = 0.0,
         pulled_days: float | None = None, refs: tuple[Reference, ...] = (), subject: str | None = None,
         size: int = 100) -> ManifestInfo:
    pulled = None if pulled_days is None else NOW - pulled_days * DAY
    return ManifestInfo("r", digest, "application/vnd.oci.image.manifest.v1+json", kind, None, subject, size,
                        NOW - age_days * DAY, pulled, tags, refs)


def digests(expiries) -> set[str]:  # type: ignore[no-untyped-def]
    return {e.digest for e in expiries}


def test_untagged_older_than_days_spares_recent_index_children_and_referrers() -> None:
    infos = [
        info("sha256:old", age_days=10),
        info("sha256:new", age_days=1),
        info("sha256:tagged", tags=("v1",), age_days=30),
        info("sha256:child", age_days=30),
        info("sha256:index", tags=("multi",), kind="index", refs=(Reference("sha256:child", 100, True),)),
        info("sha256:sig", age_days=30, subject="sha256:tagged"),
        info("sha256:orphan-sig", age_days=30, subject="sha256:gone"),
    ]
    rule = LifecycleRule(repositories=("**",), untagged_older_than_days=7)
    assert digests(evaluate(rule, infos, NOW)) == {"sha256:old", "sha256:orphan-sig"}


def test_keep_last_tagged_counts_only_matching_tags() -> None:
    infos = [info(f"sha256:v{i}", tags=(f"v{i}",), age_days=10 - i) for i in range(5)]
    infos.append(info("sha256:cache", tags=("cache",), age_days=50))
    rule = LifecycleRule(repositories=("**",), keep_last_tagged=2, tag_patterns=("v*",))
    assert digests(evaluate(rule, infos, NOW)) == {"sha256:v0", "sha256:v1", "sha256:v2"}


def test_cache_unused_days_uses_last_pull_and_spares_other_kinds() -> None:
    infos = [
        info("sha256:stale", kind="cache", tags=("cache",), age_days=40),
        info("sha256:pulled", kind="cache", tags=("cache-main",), age_days=40, pulled_days=2),
        info("sha256:fresh", kind="cache", age_days=3),
        info("sha256:image", tags=("v1",), age_days=400),
    ]
    rule = LifecycleRule(repositories=("**",), cache_unused_days=30)
    assert digests(evaluate(rule, infos, NOW)) == {"sha256:stale"}


def test_quota_evicts_least_recently_pulled_caches_first_until_under() -> None:
    shared = Reference("sha256:base", 1000, False)
    infos = [
        info("sha256:c1", kind="cache", age_days=5, pulled_days=4, refs=(shared, Reference("sha256:l1", 1000, False))),
        info("sha256:c2", kind="cache", age_days=5, pulled_days=1, refs=(shared, Reference("sha256:l2", 1000, False))),
        info("sha256:c3", kind="cache", age_days=5, pulled_days=3, refs=(shared, Reference("sha256:l3", 1000, False))),
        info("sha256:img", tags=("v1",), age_days=9, refs=(Reference("sha256:l4", 5000, False),)),
    ]
    # total: base 1000 + l1..l3 3000 + l4 5000 + 4 manifests * 100 = 9400
    rule = LifecycleRule(repositories=("**",), quota_bytes=8000)
    assert digests(evaluate(rule, infos, NOW)) == {"sha256:c1", "sha256:c3"}  # c1 (oldest pull) then c3
    assert digests(evaluate(LifecycleRule(repositories=("**",), quota_bytes=10_000), infos, NOW)) == set()
    # images are never evicted by the quota, even when it cannot be met
    assert "sha256:img" not in digests(evaluate(LifecycleRule(repositories=("**",), quota_bytes=0), infos, NOW))


def _push(storage, repo: str, tag: str | None, kind: str, pushed_at: float, layer: bytes) -> str:  # type: ignore[no-untyped-def]
    from lamina.oci import digest_of

    digest = digest_of(layer)
    storage.blobs.put(digest, layer)
    storage.metadata.link_blob(repo, digest, len(layer))
    body = f'{{"layer":"{digest}","tag":"{tag}","t":{pushed_at}}}'.encode()
    record = ManifestRecord(repo, digest_of(body), "application/vnd.oci.image.manifest.v1+json", body, kind,
                            None, None, None, pushed_at, None)
    storage.metadata.put_manifest(record, [ManifestReference(digest, len(layer))], tag)
    return str(record.digest)


def test_apply_deletes_only_in_matching_repositories_and_dry_run_deletes_nothing(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    now = time.time()
    old_cache = _push(storage, "ci/app", "cache", "cache", now - 40 * DAY, b"old cache layer")
    new_cache = _push(storage, "ci/app", "cache-pr", "cache", now - DAY, b"new cache layer")
    other = _push(storage, "prod/app", "cache", "cache", now - 40 * DAY, b"prod cache layer")
    settings = ops_from_toml('[[lifecycle.rules]]\nrepositories = ["ci/*"]\ncache_unused_days = 30\n').lifecycle
    preview = apply_lifecycle(storage, settings, dry_run=True)
    assert [e.digest for e in preview.expired] == [old_cache] and preview.pruned == []
    assert "would delete ci/app@" in format_result(preview, dry_run=True)[0]
    assert len(storage.metadata.manifest_infos("ci/app")) == 2
    done = apply_lifecycle(storage, settings).expired
    assert [e.digest for e in done] == [old_cache] and done[0].reason.startswith("build cache not pulled")
    assert {i.digest for i in storage.metadata.manifest_infos("ci/app")} == {new_cache}
    assert {i.digest for i in storage.metadata.manifest_infos("prod/app")} == {other}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[lifecycle.rules]]\nrepositories = ["a"]\n', "expires nothing"),
        ('[[lifecycle.rules]]\nrepositories = ["a"]\nkeep_last_tagged = -1\n', "keep_last_tagged"),
        ('[[lifecycle.rules]]\nrepositories = ["a"]\nkeep_last = 3\n', "lifecycle.rules\\[0\\].keep_last"),
        ('[[lifecycle.rules]]\ncache_unused_days = 3\n', "'repositories'"),
        ("[lifecycle]\nevery = 3\n", "lifecycle.every"),
    ],
)
def test_lifecycle_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ops_from_toml(text)

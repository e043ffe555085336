"""Retention rules in the spirit of ECR lifecycle policies: ``lamina registry lifecycle [--dry-run]``.

::

    [lifecycle]
    interval_seconds = 0                  # > 0: apply in the server every this many seconds (worker 0)

    [[lifecycle.rules]]
    repositories = ["**"]                 # globs (lamina.registry.globs); every matching rule applies
    untagged_older_than_days = 7          # expire untagged manifests pushed more than N days ago
    keep_last_tagged = 20                 # keep the N most recently pushed images with a tag matching...
    tag_patterns = ["v*", "release-*"]    # ...these globs (default: any tag); older ones expire
    cache_unused_days = 30                # expire build caches not pulled (nor pushed) for N days
    quota_bytes = 50_000_000_000          # over quota: evict least-recently-pulled build caches first
    cache_records_unused_days = 14        # drop the records of tagged build caches unused for N days

A manifest that an index lists is never expired on its own (its index holds it), nor is a referrer
whose subject stays. Expiry deletes the manifest and its tags, and only if its tags did not change
since the rules were evaluated (one transaction per manifest); the blobs go at the next GC.
``cache_records_unused_days`` rewrites a cache under its tag instead (:mod:`.cacheprune`), after the
expiries, with the smallest value of the rules that match the repository.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.store import Storage
from lamina.store.views import ManifestInfo, repository_bytes

from .background import Offloader, repeat_until_stopped
from .cacheprune import CachePrune, prune_cache_tag
from .globs import matches_any, string_list
from .settingerror import ConfigError

__all__ = [
    "Expiry",
    "LifecycleResult",
    "LifecycleRule",
    "LifecycleSettings",
    "apply_lifecycle",
    "apply_lifecycle_once",
    "evaluate",
    "format_result",
    "lifecycle_forever",
    "parse_lifecycle",
]

log = logging.getLogger("lamina.registry.lifecycle")
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    repositories: tuple[str, ...]
    untagged_older_than_days: float | None = None
    keep_last_tagged: int | None = None
    tag_patterns: tuple[str, ...] = ("*",)
    cache_unused_days: float | None = None
    quota_bytes: int | None = None
    cache_records_unused_days: float | None = None


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    rules: tuple[LifecycleRule, ...] = ()
    interval_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Expiry:
    repository: str
    digest: str
    tags: tuple[str, ...]
    kind: str
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class LifecycleResult:
    """One application of the rules: manifests deleted, and caches rewritten without their stale records."""

    expired: list[Expiry]
    pruned: list[CachePrune]


def _number(key: str, value: Any, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float) or value < 0:
        raise ConfigError(f"{key}: expected {'an integer' if integer else 'a number'} >= 0, got {value!r}")
    return value


_RULE_KEYS = ("repositories", "untagged_older_than_days", "keep_last_tagged", "tag_patterns", "cache_unused_days",
              "quota_bytes", "cache_records_unused_days")


def parse_lifecycle(value: Any) -> LifecycleSettings:
    if not isinstance(value, dict):
        raise ConfigError(f"lifecycle: expected a table, got {value!r}")
    unknown = set(value) - {"rules", "interval_seconds"}
    if unknown:
        raise ConfigError(f"unknown setting lifecycle.{sorted(unknown)[0]} (known: rules, interval_seconds)")
    interval = float(_number("lifecycle.interval_seconds", value.get("interval_seconds", 0)))
    items = value.get("rules", [])
    if not isinstance(items, list):
        raise ConfigError(f"lifecycle.rules: expected an array of tables ([[lifecycle.rules]]), got {items!r}")
    rules = []
    for i, item in enumerate(items):
        key = f"lifecycle.rules[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table, got {item!r}")
        for name in item:
            if name not in _RULE_KEYS:
                raise ConfigError(f"unknown setting {key}.{name} (known: {', '.join(_RULE_KEYS)})")
        if "repositories" not in item:
            raise ConfigError(f"{key}: 'repositories' (a list of globs) is required")
        repos = string_list(f"{key}.repositories", item["repositories"], non_empty=True)
        fields: dict[str, Any] = {"repositories": repos}
        for name in ("untagged_older_than_days", "cache_unused_days", "cache_records_unused_days"):
            if name in item:
                fields[name] = float(_number(f"{key}.{name}", item[name]))
        for name in ("keep_last_tagged", "quota_bytes"):
            if name in item:
                fields[name] = _number(f"{key}.{name}", item[name], integer=True)
        if "tag_patterns" in item:
            fields["tag_patterns"] = string_list(f"{key}.tag_patterns", item["tag_patterns"], non_empty=True)
        rule = LifecycleRule(**fields)
        if all(getattr(rule, n) is None for n in _RULE_KEYS[1:] if n != "tag_patterns"):
            raise ConfigError(f"{key}: the rule expires nothing; set untagged_older_than_days, keep_last_tagged, "
                              "cache_unused_days, quota_bytes or cache_records_unused_days")
        rules.append(rule)
    return LifecycleSettings(tuple(rules), interval)


def _held(infos: Sequence[ManifestInfo]) -> set[str]:
    """Digests an index lists, and referrers whose subject is present: never expired on their own."""
    present = {info.digest for info in infos}
    held = {ref.digest for info in infos for ref in info.references if ref.is_manifest}
    held |= {info.digest for info in infos if info.subject is not None and info.subject in present}
    return held


def evaluate(rule: LifecycleRule, infos: Sequence[ManifestInfo], now: float) -> list[Expiry]:
    """What ``rule`` expires among one repository's manifests (pure: no I/O)."""
    held = _held(infos)
    gone: dict[str, str] = {}
    if rule.untagged_older_than_days is not None:
        cutoff = now - rule.untagged_older_than_days * DAY
        for info in infos:
            if not info.tags and info.digest not in held and info.pushed_at < cutoff:
                gone.setdefault(info.digest, f"untagged for more than {rule.untagged_older_than_days:g} days")
    if rule.keep_last_tagged is not None:
        matching = [i for i in infos if any(matches_any(rule.tag_patterns, t) for t in i.tags)]
        matching.sort(key=lambda i: (-i.pushed_at, i.digest))
        for info in matching[rule.keep_last_tagged:]:
            gone.setdefault(info.digest, f"more than {rule.keep_last_tagged} images tagged "
                                         f"{'|'.join(rule.tag_patterns)}")
    caches = [i for i in infos if i.kind == "cache" and i.digest not in held]
    if rule.cache_unused_days is not None:
        cutoff = now - rule.cache_unused_days * DAY
        for info in caches:
            if info.last_used < cutoff:
                gone.setdefault(info.digest, f"build cache not pulled for {rule.cache_unused_days:g} days")
    if rule.quota_bytes is not None:
        remaining = [i for i in infos if i.digest not in gone]
        for info in sorted((c for c in caches if c.digest not in gone), key=lambda c: (c.last_used, c.digest)):
            if repository_bytes(remaining) <= rule.quota_bytes:
                break
            gone[info.digest] = f"repository over its quota of {rule.quota_bytes} bytes (least recently pulled cache)"
            remaining = [i for i in remaining if i.digest != info.digest]
    by_digest = {info.digest: info for info in infos}
    return [
        Expiry(info.repository, digest, info.tags, info.kind, info.size, reason)
        for digest, reason in gone.items()
        for info in [by_digest[digest]]
    ]


def apply_lifecycle(
    storage: Storage, settings: LifecycleSettings, *, dry_run: bool = False, now: float | None = None
) -> LifecycleResult:
    """Evaluate every rule on every matching repository; delete and rewrite unless ``dry_run``. Blocking."""
    when = time.time() if now is None else now
    result = LifecycleResult([], [])
    last: str | None = None
    while True:
        names = storage.metadata.list_repositories(last, 500)
        if not names:
            return result
        last = names[-1]
        for name in names:
            rules = [r for r in settings.rules if matches_any(r.repositories, name)]
            if rules:
                _apply_to_repository(storage, name, rules, when, dry_run, result)


def apply_lifecycle_once(
    storage: Storage, settings: LifecycleSettings, *, now: float | None = None
) -> LifecycleResult | None:
    """:func:`apply_lifecycle` under the registry's ``lifecycle`` lease (:mod:`lamina.store.leases`):
    None, doing nothing, while another process or replica applies the rules. Blocking."""
    with storage.metadata.maintenance_lease("lifecycle") as lease:
        if not lease.held:
            return None
        return apply_lifecycle(storage, settings, now=now)


def _apply_to_repository(
    storage: Storage, name: str, rules: Sequence[LifecycleRule], when: float, dry_run: bool, result: LifecycleResult
) -> None:
    infos = storage.metadata.manifest_infos(name)
    seen: set[str] = set()
    for rule in rules:
        for expiry in evaluate(rule, infos, when):
            if expiry.digest in seen:
                continue
            seen.add(expiry.digest)
            if dry_run or storage.metadata.delete_manifest_if_unchanged(name, expiry.digest, expiry.tags):
                result.expired.append(expiry)
                if not dry_run:
                    log.info("lifecycle: deleted %s@%s (%s)", name, expiry.digest, expiry.reason)
    ages = [r.cache_records_unused_days for r in rules if r.cache_records_unused_days is not None]
    if not ages:
        return
    tags = sorted(tag for info in infos if info.kind == "cache" and info.digest not in seen for tag in info.tags)
    for tag in tags:
        pruned = prune_cache_tag(storage, name, tag, min(ages), when, dry_run=dry_run)
        if pruned is not None:
            result.pruned.append(pruned)
            if not dry_run:
                log.info("lifecycle: %s", _prune_line(pruned, dry_run=False))


def _prune_line(p: CachePrune, *, dry_run: bool) -> str:
    records, layers = f"records {p.records[0]} -> {p.records[1]}", f"layers {p.layers[0]} -> {p.layers[1]}"
    if p.new_digest is None:
        verb = "would delete" if dry_run else "deleted"
        return f"{verb} {p.repository}:{p.tag} ({p.old_digest}), nothing left: {p.reason}"
    verb = "would prune" if dry_run else "pruned"
    return f"{verb} {p.repository}:{p.tag} {p.old_digest} -> {p.new_digest}, {records}, {layers}: {p.reason}"


def format_result(result: LifecycleResult, *, dry_run: bool) -> list[str]:
    verb = "would delete" if dry_run else "deleted"
    lines = [
        f"{verb} {e.repository}@{e.digest} [{e.kind}] tags={','.join(e.tags) or '-'}: {e.reason}"
        for e in result.expired
    ]
    lines += [_prune_line(p, dry_run=dry_run) for p in result.pruned]
    count, pruned = len(result.expired), len(result.pruned)
    lines.append(f"lifecycle (dry run): {count} manifest(s) would be deleted, {pruned} cache tag(s) would be pruned"
                 if dry_run else f"lifecycle: {count} manifest(s) deleted, {pruned} cache tag(s) pruned")
    return lines


async def lifecycle_forever(
    storage: Storage,
    settings: LifecycleSettings,
    offload: Offloader,
    stop: asyncio.Event,
    on_result: Callable[[LifecycleResult], None] | None = None,
) -> None:
    """The background schedule (one worker of each replica runs it; the lease lets one replica apply
    the rules per round) until ``stop``."""

    async def one_round() -> None:
        result = await offload.run(apply_lifecycle_once, storage, settings)
        if result is None:
            log.info("lifecycle rules are being applied by another process or replica; skipping this round")
        elif on_result is not None:
            on_result(result)

    await repeat_until_stopped(
        stop, settings.interval_seconds, one_round, log, "applying lifecycle rules", wait_first=True
    )

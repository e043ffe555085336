"""What a build will ask of each registry, declared before its first request (BuildKit's per-registry scopes).

One token per registry covers the whole build: pull+push on every push target and ``--cache-to`` repository,
pull on every ``--cache-from`` repository. Base images add pull on their repository when they are resolved
(the client merges a scope a request needs into the next token), and a cross-repository mount adds pull on
its source the same way. Declaring up front means the concurrent first requests of a registry share one
token request instead of asking for a narrower token each and then widening it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.build.cacheopts import CacheFrom, CacheTo
from lamina.client import ClientPool, pull_scope, push_scope
from lamina.oci import parse_reference

__all__ = ["declare_access", "registry_scopes"]


def registry_scopes(
    push: Sequence[str], cache_to: Sequence[CacheTo], cache_from: Sequence[CacheFrom]
) -> dict[str, list[str]]:
    """registry host -> the scopes a build with these targets needs there (pure; sorted, no duplicates)."""
    wanted: dict[str, set[str]] = {}

    def add(ref: str, scope: str) -> None:
        reference = parse_reference(ref)
        wanted.setdefault(reference.registry, set()).add(
            push_scope(reference.repository) if scope == "push" else pull_scope(reference.repository)
        )

    for ref in push:
        add(ref, "push")
    for spec in cache_to:
        if spec.type == "registry" and spec.ref:
            add(spec.ref, "push")
    for source in cache_from:
        if source.type == "registry" and source.ref:
            add(source.ref, "pull")
    return {registry: sorted(scopes) for registry, scopes in sorted(wanted.items())}


def declare_access(
    pool: ClientPool, push: Sequence[str], cache_to: Sequence[CacheTo], cache_from: Sequence[CacheFrom]
) -> None:
    for registry, scopes in registry_scopes(push, cache_to, cache_from).items():
        pool.declare(registry, scopes)

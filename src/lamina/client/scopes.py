"""Token scopes (distribution "Token Scope Documentation"): ``TYPE:NAME:ACTION[,ACTION...]``, merged per resource.

A :class:`ScopeSet` is what a token was asked for, or what a build will need from one registry: the
union of the actions per resource, the way BuildKit asks for one token per registry (pull on the base
image's repository, pull+push on the push target and the cache repository, pull on a cross-repository
mount source). Rendering is sorted, so equal sets give equal token requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ScopeSet", "pull_scope", "push_scope"]


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _items(scope: str) -> frozenset[tuple[str, str, str]]:
    """``repository:a/b:pull,push`` -> {(repository, a/b, pull), (repository, a/b, push)}; junk -> {}."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return frozenset()
    return frozenset((kind, name, action) for action in actions.split(",") if action)


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """An immutable set of (type, name, action) grants asked for; ``render`` gives the scope strings."""

    items: frozenset[tuple[str, str, str]] = frozenset()

    @classmethod
    def parse(cls, scopes: Iterable[str]) -> ScopeSet:
        """Scope strings (each may hold several, space-separated, as a challenge's ``scope`` does)."""
        items: set[tuple[str, str, str]] = set()
        for value in scopes:
            for scope in value.split():
                items |= _items(scope)
        return cls(frozenset(items))

    def __or__(self, other: ScopeSet) -> ScopeSet:
        return ScopeSet(self.items | other.items)

    def covers(self, other: ScopeSet) -> bool:
        return other.items <= self.items

    def __bool__(self) -> bool:
        return bool(self.items)

    def render(self) -> tuple[str, ...]:
        """One ``type:name:actions`` string per resource, sorted (a stable token request)."""
        grouped: dict[tuple[str, str], set[str]] = {}
        for kind, name, action in self.items:
            grouped.setdefault((kind, name), set()).add(action)
        return tuple(f"{kind}:{name}:{','.join(sorted(actions))}" for (kind, name), actions in sorted(grouped.items()))

    def __str__(self) -> str:
        return " ".join(self.render()) or "registry access"

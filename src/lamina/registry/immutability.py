"""Immutable tags (ECR's tag immutability, per repository glob, with exclusions).

::

    [[immutable_tags]]
    repositories = ["apps/**"]         # globs (lamina.registry.globs)
    tags = ["*"]                       # which tags are immutable (default: all)
    exclude = ["cache", "cache-*"]     # ...except these, so a remote build cache can keep moving

A PUT that would move an immutable tag to a different digest is refused with DENIED; re-pushing the same
digest is allowed (idempotent pushes), and so is deleting the manifest. The check runs inside the
store's manifest transaction (``put_manifest(..., immutable=True)``), so two racing pushes of a new
immutable tag cannot both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode, RegistryError
from .globs import matches_any, string_list
from .settingerror import ConfigError

__all__ = ["ImmutableTagRule", "is_immutable", "parse_immutable_tags", "tag_immutable_error"]


@dataclass(frozen=True, slots=True)
class ImmutableTagRule:
    repositories: tuple[str, ...]
    tags: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()


def parse_immutable_tags(value: Any) -> tuple[ImmutableTagRule, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"immutable_tags: expected an array of tables ([[immutable_tags]]), got {value!r}")
    rules = []
    for i, item in enumerate(value):
        key = f"immutable_tags[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table, got {item!r}")
        unknown = set(item) - {"repositories", "tags", "exclude"}
        if unknown:
            raise ConfigError(f"unknown setting {key}.{sorted(unknown)[0]} (known: repositories, tags, exclude)")
        if "repositories" not in item:
            raise ConfigError(f"{key}: 'repositories' (a list of globs) is required")
        rules.append(ImmutableTagRule(
            repositories=string_list(f"{key}.repositories", item["repositories"]),
            tags=string_list(f"{key}.tags", item.get("tags", ["*"])),
            exclude=string_list(f"{key}.exclude", item.get("exclude", [])),
        ))
    return tuple(rules)


def is_immutable(rules: Sequence[ImmutableTagRule], repository: str, tag: str) -> bool:
    return any(
        matches_any(rule.repositories, repository)
        and matches_any(rule.tags, tag)
        and not matches_any(rule.exclude, tag)
        for rule in rules
    )


def tag_immutable_error(repository: str, tag: str, current: str, new: str) -> RegistryError:
    return RegistryError(
        ErrorCode.DENIED,
        f"tag {tag!r} in {repository} is immutable (immutable_tags) and already points at {current}; "
        f"push {new} under a new tag",
        detail={"name": repository, "tag": tag, "current": current},
    )

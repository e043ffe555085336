"""The one glob grammar of every ops rule: ``*`` stays in a segment, ``**`` crosses them, whole names only."""

from __future__ import annotations

import pytest

from lamina.registry.config import ConfigError
from lamina.registry.globs import matches_any, string_list


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("apps/*", "apps/web", True),
        ("apps/*", "apps/web/api", False),
        ("apps/**", "apps/web/api", True),
        ("apps/**", "apps", False),
        ("**", "anything/at/all", True),
        ("cache-*", "cache-main", True),
        ("cache-*", "cache", False),
        ("v?", "v1", True),
        ("v?", "v10", False),
        ("a.b", "aXb", False),  # regex metacharacters are literal
        ("team-[ab]", "team-a", False),
        ("team-[ab]", "team-[ab]", True),
        ("web", "apps/web", False),  # whole names only
    ],
)
def test_glob_semantics(pattern: str, name: str, expected: bool) -> None:
    assert matches_any([pattern], name) is expected


def test_string_list_accepts_a_string_or_a_list_and_names_the_key() -> None:
    assert string_list("k", "a") == ("a",)
    assert string_list("k", ["a", "b"]) == ("a", "b")
    assert string_list("k", []) == ()
    with pytest.raises(ConfigError, match="k: expected a non-empty list"):
        string_list("k", [], non_empty=True)
    with pytest.raises(ConfigError, match=r"rules\.users"):
        string_list("rules.users", ["ok", 3])

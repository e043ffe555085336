"""The scopes a build declares per registry before its first request (``lamina.build.access``)."""

from __future__ import annotations

from lamina.build.access import registry_scopes
from lamina.build.cacheopts import parse_cache_from, parse_cache_to


def test_push_targets_and_cache_repositories_per_registry() -> None:
    scopes = registry_scopes(
        ["reg.example:5000/team/app:1", "reg.example:5000/team/app:latest", "ghcr.io/org/app:1"],
        [parse_cache_to("type=registry,ref=reg.example:5000/team/cache:main,mode=max"),
         parse_cache_to("type=inline")],
        [parse_cache_from("type=registry,ref=reg.example:5000/team/cache:main"),
         parse_cache_from("other.example/shared/cache:main")],
    )
    assert scopes == {
        "ghcr.io": ["repository:org/app:pull,push"],
        "other.example": ["repository:shared/cache:pull"],
        "reg.example:5000": [
            "repository:team/app:pull,push", "repository:team/cache:pull", "repository:team/cache:pull,push",
        ],
    }


def test_docker_hub_short_names_and_nothing_to_declare() -> None:
    assert registry_scopes(["alice/app:1"], [], []) == {"docker.io": ["repository:alice/app:pull,push"]}
    assert registry_scopes([], [parse_cache_to("type=local,dest=/tmp/c")], []) == {}

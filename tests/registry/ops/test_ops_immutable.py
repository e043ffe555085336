"""Immutable tags: release tags cannot move, excluded cache tags can, other repositories are untouched."""

from __future__ import annotations

import asyncio

import pytest
from opstools import OpsClient, ops_from_toml
from regtools import error_code, push_image

from lamina.registry.config import ConfigError

RULES = """
[[immutable_tags]]
repositories = ["apps/**"]
exclude = ["cache", "cache-*"]

[[immutable_tags]]
repositories = ["libs/*"]
tags = ["v*"]
"""


async def test_release_tag_cannot_move_but_cache_tags_can(make_ops_client: OpsClient) -> None:
    client = await make_ops_client(RULES)
    _, first = await push_image(client, "apps/web", "v1", layers=[b"one"])
    _, again = await push_image(client, "apps/web", "v1", layers=[b"one"])  # same digest: fine
    assert again == first
    with pytest.raises(AssertionError, match="DENIED"):
        await push_image(client, "apps/web", "v1", layers=[b"two"])
    response = await client.get("/v2/apps/web/manifests/v1")
    assert response.headers["Docker-Content-Digest"] == first
    for tag in ("cache", "cache-main"):
        await push_image(client, "apps/web", tag, layers=[b"one"])
        await push_image(client, "apps/web", tag, layers=[b"two"])  # a remote build cache keeps moving


async def test_denied_answer_is_403_and_names_the_tag(make_ops_client: OpsClient) -> None:
    client = await make_ops_client(RULES)
    await push_image(client, "apps/web", "v1", layers=[b"one"])
    other, _ = await push_image(client, "apps/web", None, layers=[b"two"])
    response = await client.put("/v2/apps/web/manifests/v1", data=other,
                                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert response.status == 403 and await error_code(response) == "DENIED"
    text = await response.text()
    assert "'v1'" in text and "apps/web" in text and "immutable" in text


async def test_tag_patterns_and_repository_globs_limit_the_rule(make_ops_client: OpsClient) -> None:
    client = await make_ops_client(RULES)
    await push_image(client, "libs/core", "v2", layers=[b"a"])
    with pytest.raises(AssertionError, match="DENIED"):
        await push_image(client, "libs/core", "v2", layers=[b"b"])
    await push_image(client, "libs/core", "latest", layers=[b"a"])
    await push_image(client, "libs/core", "latest", layers=[b"b"])  # not v*: mutable
    await push_image(client, "libs/core/sub", "v2", layers=[b"a"])
    await push_image(client, "libs/core/sub", "v2", layers=[b"b"])  # libs/* is one segment
    await push_image(client, "other", "v1", layers=[b"a"])
    await push_image(client, "other", "v1", layers=[b"b"])


async def test_racing_pushes_of_a_new_immutable_tag_leave_exactly_one_winner(make_ops_client: OpsClient) -> None:
    client = await make_ops_client(RULES)

    async def push(i: int) -> str:
        try:
            _, digest = await push_image(client, "apps/race", "v1", layers=[f"layer {i}".encode()])
            return digest
        except AssertionError as exc:
            assert "DENIED" in str(exc)
            return ""

    results = await asyncio.gather(*(push(i) for i in range(8)))
    winners = [d for d in results if d]
    assert len(winners) == 1
    response = await client.get("/v2/apps/race/manifests/v1")
    assert response.headers["Docker-Content-Digest"] == winners[0]


def test_immutable_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"immutable_tags\[0\]"):
        ops_from_toml('[[immutable_tags]]\ntags = ["v*"]\n')
    with pytest.raises(ConfigError, match=r"immutable_tags\[0\]\.colour"):
        ops_from_toml('[[immutable_tags]]\nrepositories = ["a"]\ncolour = "x"\n')

"""Conditional tag updates (lamina's extension): ``ETag`` on manifest GET/HEAD, ``If-Match`` /
``If-None-Match`` on a PUT by tag answered 201 or 412 PRECONDITION_FAILED in the spec's error format, and
N racing writers against a real multi-worker ``lamina registry serve``: exactly one wins."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests
from regtools import Client, error_code, push_blob, push_image, sha256

from helpers.registries import start_lamina
from lamina.oci import mediatypes as mt

HEADERS = {"Content-Type": mt.OCI_MANIFEST}


async def _candidate(client: Client, name: str, label: str) -> tuple[bytes, str]:
    """An image manifest (not yet pushed) over blobs pushed now: what a writer would PUT."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = b"layer of " + label.encode()
    for data in (config, layer):
        await push_blob(client, name, data)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
    }
    body = json.dumps(doc).encode()
    return body, sha256(body)


async def test_get_and_head_answer_the_digest_as_etag(client: Client) -> None:
    _, digest = await push_image(client, "app", "cache")
    for method in (client.get, client.head):
        response = await method("/v2/app/manifests/cache")
        assert response.status == 200
        assert response.headers["ETag"] == f'"{digest}"' and response.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize("form", ["quoted", "bare"])
async def test_if_match_moves_the_tag_only_from_the_digest_read(client: Client, form: str) -> None:
    _, base = await push_image(client, "app", "cache")
    etag = (await client.head("/v2/app/manifests/cache")).headers["ETag"]
    expected = etag if form == "quoted" else base
    first, first_digest = await _candidate(client, "app", "first")
    second, _ = await _candidate(client, "app", "second")
    ok = await client.put("/v2/app/manifests/cache", data=first, headers={**HEADERS, "If-Match": expected})
    assert ok.status == 201, await ok.text()
    lost = await client.put("/v2/app/manifests/cache", data=second, headers={**HEADERS, "If-Match": expected})
    assert lost.status == 412 and lost.content_type == "application/json"
    body = await lost.json()
    assert body["errors"][0]["code"] == "PRECONDITION_FAILED"
    assert body["errors"][0]["detail"] == {"name": "app", "tag": "cache", "current": first_digest}
    assert f"points at {first_digest}" in body["errors"][0]["message"] and base in body["errors"][0]["message"]
    now = await client.head("/v2/app/manifests/cache")
    assert now.headers["Docker-Content-Digest"] == first_digest
    # the writer that lost re-reads, merges and retries with the new ETag: it wins now
    retried = await client.put("/v2/app/manifests/cache", data=second,
                               headers={**HEADERS, "If-Match": now.headers["ETag"]})
    assert retried.status == 201
    # a retry of an update that already happened (its answer lost) is not refused
    again = await client.put("/v2/app/manifests/cache", data=second, headers={**HEADERS, "If-Match": expected})
    assert again.status == 201


async def test_if_none_match_star_creates_the_tag_once(client: Client) -> None:
    first, first_digest = await _candidate(client, "app", "first")
    second, _ = await _candidate(client, "app", "second")
    created = await client.put("/v2/app/manifests/new", data=first, headers={**HEADERS, "If-None-Match": "*"})
    assert created.status == 201
    refused = await client.put("/v2/app/manifests/new", data=second, headers={**HEADERS, "If-None-Match": "*"})
    assert refused.status == 412 and await error_code(refused) == "PRECONDITION_FAILED"
    assert "If-None-Match: * expected no such tag" in await refused.text()
    missing = await client.put("/v2/app/manifests/other", data=second, headers={**HEADERS, "If-Match": "*"})
    assert missing.status == 412 and "does not exist" in await missing.text()
    assert (await client.head("/v2/app/manifests/new")).headers["Docker-Content-Digest"] == first_digest


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"If-Match": '"sha256:abc"'}, "If-Match: invalid digest"),
        ({"If-Match": 'W/"sha256:' + "a" * 64 + '"'}, "weak entity tag"),
        ({"If-None-Match": '*, "sha256:' + "a" * 64 + '"'}, "cannot be combined"),
    ],
)
async def test_malformed_conditions_are_one_clear_400(client: Client, headers: dict[str, str], needle: str) -> None:
    await push_image(client, "app", "cache")
    body, _ = await _candidate(client, "app", "x")
    response = await client.put("/v2/app/manifests/cache", data=body, headers={**HEADERS, **headers})
    assert response.status == 400 and await error_code(response) == "DIGEST_INVALID"
    assert needle in (await response.json())["errors"][0]["message"]


async def test_conditions_where_no_tag_moves_are_refused_not_ignored(client: Client) -> None:
    _, base = await push_image(client, "app", "cache")
    body, digest = await _candidate(client, "app", "x")
    by_digest = await client.put(f"/v2/app/manifests/{digest}", data=body, headers={**HEADERS, "If-Match": base})
    assert by_digest.status == 400 and await error_code(by_digest) == "UNSUPPORTED"
    assert "PUT by tag" in await by_digest.text()
    delete = await client.delete("/v2/app/manifests/cache", headers={"If-Match": base})
    assert delete.status == 400 and await error_code(delete) == "UNSUPPORTED"
    assert (await client.head("/v2/app/manifests/cache")).status == 200


def _put_concurrently(url: str, bodies: list[bytes], headers: dict[str, str]) -> list[requests.Response]:
    """PUT every body to ``url`` at the same moment, each from its own connection (so SO_REUSEPORT spreads
    them over the server's worker processes)."""
    barrier = threading.Barrier(len(bodies))
    results: list[requests.Response | None] = [None] * len(bodies)

    def put(i: int) -> None:
        with requests.Session() as session:
            session.get(url.split("/v2/")[0] + "/v2/", timeout=30)  # connect before the barrier
            barrier.wait()
            results[i] = session.put(url, data=bodies[i], headers=headers, timeout=60)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _manifest_over(url: str, name: str, label: str) -> bytes:
    from helpers.api import push_blob as push

    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = f"layer of {label}".encode()
    push(url, name, config)
    push(url, name, layer)
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
    }).encode()


def test_racing_conditional_puts_on_a_multi_worker_server_leave_one_winner(tmp_path: Path) -> None:
    writers = 8
    server = start_lamina(tmp_path, workers=3)
    try:
        base_url = f"{server.url}/v2/team/cache/manifests/shared"
        base = _manifest_over(server.url, "team/cache", "base")
        assert requests.put(base_url, data=base, headers=HEADERS, timeout=30).status_code == 201
        etag = requests.head(base_url, headers={"Accept": mt.OCI_MANIFEST}, timeout=30).headers["ETag"]
        for round_ in range(3):  # every round starts from the digest the previous winner left
            bodies = [_manifest_over(server.url, "team/cache", f"round {round_} writer {i}") for i in range(writers)]
            answers = _put_concurrently(base_url, bodies, {**HEADERS, "If-Match": etag})
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [201] + [412] * (writers - 1), [r.text for r in answers]
            winner = next(r for r in answers if r.status_code == 201).headers["Docker-Content-Digest"]
            for lost in (r for r in answers if r.status_code == 412):
                error = lost.json()["errors"][0]
                assert error["code"] == "PRECONDITION_FAILED" and error["detail"]["current"] == winner
            now = requests.get(base_url, headers={"Accept": mt.OCI_MANIFEST}, timeout=30)
            assert now.headers["ETag"] == f'"{winner}"' and sha256(now.content) == winner
            etag = now.headers["ETag"]
        # If-None-Match: * on a new tag: one creator
        new_url = f"{server.url}/v2/team/cache/manifests/fresh"
        bodies = [_manifest_over(server.url, "team/cache", f"fresh {i}") for i in range(writers)]
        answers = _put_concurrently(new_url, bodies, {**HEADERS, "If-None-Match": "*"})
        assert sorted(r.status_code for r in answers) == [201] + [412] * (writers - 1)
    finally:
        server.stop()

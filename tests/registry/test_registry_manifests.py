"""Manifest endpoints over HTTP: PUT validation (strict like ECR), GET/HEAD with Accept negotiation,
DELETE by digest and by tag, and the kinds recorded (image, index, build cache, artifact)."""

from __future__ import annotations

import asyncio
import json

from regtools import Client, descriptor, error_code, push_blob, push_image, sha256

from lamina.oci import mediatypes as mt
from lamina.registry.services import STORAGE


def _kind(client: Client, name: str, reference: str) -> str:
    record = client.server.app[STORAGE].metadata.get_manifest(name, reference)
    assert record is not None
    return record.kind


async def test_put_get_head_by_tag_and_digest(client: Client) -> None:
    body, digest = await push_image(client, "team/app", "v1")
    for reference in ("v1", digest):
        get = await client.get(f"/v2/team/app/manifests/{reference}", headers={"Accept": mt.OCI_MANIFEST})
        assert get.status == 200
        assert await get.read() == body
        assert get.headers["Content-Type"] == mt.OCI_MANIFEST
        assert get.headers["Docker-Content-Digest"] == digest
        assert get.headers["Content-Length"] == str(len(body))
        head = await client.head(f"/v2/team/app/manifests/{reference}")
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(body))
        assert head.headers["Docker-Content-Digest"] == digest
        assert await head.read() == b""
    assert _kind(client, "team/app", "v1") == "image"


async def test_put_response_headers(client: Client) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = b"layer"
    await push_blob(client, "app", config)
    await push_blob(client, "app", layer)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": descriptor(config, mt.OCI_CONFIG),
           "layers": [descriptor(layer, mt.OCI_LAYER_GZIP)]}
    body = json.dumps(doc).encode()
    response = await client.put("/v2/app/manifests/latest", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 201
    assert response.headers["Docker-Content-Digest"] == sha256(body)
    assert response.headers["Location"] == f"/v2/app/manifests/{sha256(body)}"
    assert "OCI-Subject" not in response.headers


async def test_manifest_unknown_and_name_unknown(client: Client) -> None:
    missing = await client.get("/v2/nothing/manifests/latest")
    assert missing.status == 404 and await error_code(missing) == "MANIFEST_UNKNOWN"
    head = await client.head(f"/v2/nothing/manifests/{sha256(b'x')}")
    assert head.status == 404
    tags = await client.get("/v2/nothing/tags/list")
    assert tags.status == 404 and await error_code(tags) == "NAME_UNKNOWN"


async def test_invalid_tag_and_reference(client: Client) -> None:
    bad_tag = await client.put("/v2/app/manifests/-bad", data=b"{}", headers={"Content-Type": mt.OCI_MANIFEST})
    assert bad_tag.status == 400 and await error_code(bad_tag) == "TAG_INVALID"
    long_tag = await client.get("/v2/app/manifests/" + "t" * 129)  # names no manifest: 404, as distribution
    assert long_tag.status == 404 and await error_code(long_tag) == "MANIFEST_UNKNOWN"
    bad_digest = await client.get("/v2/app/manifests/sha256:nothex")
    assert bad_digest.status == 400 and await error_code(bad_digest) == "DIGEST_INVALID"


async def test_malformed_bodies_are_manifest_invalid(client: Client) -> None:
    cases = [
        b"not json",
        b"[1, 2]",
        b'{"schemaVersion": 3}',
        json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                    "config": {"mediaType": mt.OCI_CONFIG, "digest": "sha256:zz", "size": 1}, "layers": []}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": descriptor(b"c", mt.OCI_CONFIG),
                    "layers": [descriptor(b"l", mt.OCI_LAYER, size=-1)]}).encode(),
    ]
    for body in cases:
        response = await client.put("/v2/app/manifests/x", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
        assert response.status == 400, body
        assert await error_code(response) == "MANIFEST_INVALID", body


async def test_schema1_refused(client: Client) -> None:
    body = json.dumps({"schemaVersion": 1, "name": "app", "tag": "latest", "fsLayers": []}).encode()
    response = await client.put(
        "/v2/app/manifests/old", data=body, headers={"Content-Type": mt.DOCKER_MANIFEST_SCHEMA1_SIGNED}
    )
    assert response.status == 400
    body_json = await response.json()
    assert body_json["errors"][0]["code"] == "MANIFEST_INVALID"
    assert "schema1" in body_json["errors"][0]["message"]


async def test_media_type_must_match_content_type(client: Client) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    await push_blob(client, "app", config)
    await push_blob(client, "app", b"l")
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": descriptor(config, mt.OCI_CONFIG),
           "layers": [descriptor(b"l", mt.OCI_LAYER)]}
    response = await client.put(
        "/v2/app/manifests/x", data=json.dumps(doc).encode(), headers={"Content-Type": mt.DOCKER_MANIFEST_V2}
    )
    assert response.status == 400 and await error_code(response) == "MANIFEST_INVALID"


async def test_missing_blobs_are_manifest_blob_unknown(client: Client) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    await push_blob(client, "app", config)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": descriptor(config, mt.OCI_CONFIG),
           "layers": [descriptor(b"never uploaded", mt.OCI_LAYER_GZIP)]}
    response = await client.put("/v2/app/manifests/x", data=json.dumps(doc).encode(),
                                headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 400 and await error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    # a blob pushed only to another repository does not count
    await push_blob(client, "other", b"never uploaded")
    again = await client.put("/v2/app/manifests/x", data=json.dumps(doc).encode(),
                             headers={"Content-Type": mt.OCI_MANIFEST})
    assert again.status == 400 and await error_code(again) == "MANIFEST_BLOB_UNKNOWN"
    assert (await client.get("/v2/app/manifests/x")).status == 404


async def test_size_mismatch_is_refused(client: Client) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    await push_blob(client, "app", config)
    await push_blob(client, "app", b"layer")
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": descriptor(config, mt.OCI_CONFIG),
           "layers": [descriptor(b"layer", mt.OCI_LAYER, size=999)]}
    response = await client.put("/v2/app/manifests/x", data=json.dumps(doc).encode(),
                                headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 400 and await error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_put_by_digest_must_match_body(client: Client) -> None:
    body, digest = await push_image(client, "app", None)
    assert (await client.get(f"/v2/app/manifests/{digest}")).status == 200
    wrong = await client.put(f"/v2/app/manifests/{sha256(b'other')}", data=body,
                             headers={"Content-Type": mt.OCI_MANIFEST})
    assert wrong.status == 400 and await error_code(wrong) == "DIGEST_INVALID"


async def test_size_cap(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_manifest_bytes=2048)
    body = json.dumps({"schemaVersion": 2, "annotations": {"pad": "x" * 4096}}).encode()
    response = await client.put("/v2/app/manifests/big", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 400 and await error_code(response) == "MANIFEST_INVALID"
    assert "max_manifest_bytes" in (await response.json())["errors"][0]["message"]


async def test_empty_layers_policy(make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    strict = await make_client()
    config = b"{}"
    await push_blob(strict, "app", config)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/x.test",
           "config": descriptor(config, mt.OCI_EMPTY), "layers": []}
    body = json.dumps(doc).encode()
    refused = await strict.put("/v2/app/manifests/a", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
    assert refused.status == 400 and await error_code(refused) == "MANIFEST_INVALID"
    assert mt.OCI_EMPTY in (await refused.json())["errors"][0]["message"]
    lenient = await make_client(root=tmp_path / "lenient", allow_empty_layers=True)
    await push_blob(lenient, "app", config)
    accepted = await lenient.put("/v2/app/manifests/a", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
    assert accepted.status == 201
    assert _kind(lenient, "app", "a") == "artifact"


async def test_accept_negotiation(client: Client) -> None:
    body, _digest = await push_image(client, "app", "v1")
    ok_cases = [None, "*/*", mt.OCI_MANIFEST, f"{mt.DOCKER_MANIFEST_V2}, {mt.OCI_MANIFEST};q=0.9", "application/*"]
    for accept in ok_cases:
        headers = {"Accept": accept} if accept else {}
        response = await client.get("/v2/app/manifests/v1", headers=headers)
        assert response.status == 200, accept
        assert await response.read() == body
    refused = await client.get("/v2/app/manifests/v1", headers={"Accept": mt.DOCKER_MANIFEST_V2})
    assert refused.status == 404 and await error_code(refused) == "MANIFEST_UNKNOWN"


async def test_docker_schema2_and_manifest_list(client: Client) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    _, child = await push_image(client, "app", "amd64", config=config, config_type=mt.DOCKER_CONFIG,
                                media_type=mt.DOCKER_MANIFEST_V2, layer_type=mt.DOCKER_LAYER_GZIP)
    child_body = await (await client.get(f"/v2/app/manifests/{child}")).read()
    index = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [
        descriptor(child_body, mt.DOCKER_MANIFEST_V2, platform={"architecture": "amd64", "os": "linux"})]}
    body = json.dumps(index).encode()
    response = await client.put("/v2/app/manifests/multi", data=body,
                                headers={"Content-Type": mt.DOCKER_MANIFEST_LIST})
    assert response.status == 201, await response.text()
    get = await client.get("/v2/app/manifests/multi", headers={"Accept": mt.DOCKER_MANIFEST_LIST})
    assert get.headers["Content-Type"] == mt.DOCKER_MANIFEST_LIST
    assert _kind(client, "app", "multi") == "index"


async def test_index_child_must_be_a_manifest_in_the_repository(client: Client) -> None:
    child_body, _child = await push_image(client, "elsewhere", "v1")
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [descriptor(child_body, mt.OCI_MANIFEST)]}
    body = json.dumps(index).encode()
    missing = await client.put("/v2/app/manifests/idx", data=body, headers={"Content-Type": mt.OCI_INDEX})
    assert missing.status == 400 and await error_code(missing) == "MANIFEST_BLOB_UNKNOWN"
    await push_image(client, "app", "v1")  # same bytes: layers named after the repository differ...
    child_body2, _ = await push_image(client, "app", None, layers=[b"layer for elsewhere"])
    assert child_body2 == child_body
    ok = await client.put("/v2/app/manifests/idx", data=body, headers={"Content-Type": mt.OCI_INDEX})
    assert ok.status == 201


async def test_index_child_with_blob_media_type_is_invalid(client: Client) -> None:
    digest = await push_blob(client, "app", b"a blob")
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": digest, "size": 6}]}
    response = await client.put("/v2/app/manifests/idx", data=json.dumps(index).encode(),
                                headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 400 and await error_code(response) == "MANIFEST_INVALID"


async def test_delete_tag_then_manifest(client: Client) -> None:
    _, digest = await push_image(client, "app", "v1")
    await client.put("/v2/app/manifests/v2", data=await (await client.get(f"/v2/app/manifests/{digest}")).read(),
                     headers={"Content-Type": mt.OCI_MANIFEST})
    untag = await client.delete("/v2/app/manifests/v1")
    assert untag.status == 202
    assert (await client.get("/v2/app/manifests/v1")).status == 404
    assert (await client.get("/v2/app/manifests/v2")).status == 200
    assert (await client.delete("/v2/app/manifests/v1")).status == 404
    deleted = await client.delete(f"/v2/app/manifests/{digest}")
    assert deleted.status == 202
    assert (await client.get(f"/v2/app/manifests/{digest}")).status == 404
    assert (await client.get("/v2/app/manifests/v2")).status == 404
    again = await client.delete(f"/v2/app/manifests/{digest}")
    assert again.status == 404 and await error_code(again) == "MANIFEST_UNKNOWN"


async def test_concurrent_pushes_to_the_same_tag(client: Client) -> None:
    bodies = []
    for i in range(6):
        body, _ = await push_image(client, "app", None, layers=[f"layer {i}".encode()])
        bodies.append(body)

    async def put(body: bytes) -> int:
        response = await client.put("/v2/app/manifests/race", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
        return response.status

    statuses = await asyncio.gather(*(put(b) for b in bodies * 3))
    assert set(statuses) == {201}
    final = await (await client.get("/v2/app/manifests/race")).read()
    assert final in bodies

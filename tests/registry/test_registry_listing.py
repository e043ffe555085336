"""Tags list, catalog and referrers over HTTP (end-8a/8b, _catalog, end-12a/12b), and the
BuildKit-shaped cache round trip (image-manifest=true and the legacy index, under both policies)."""

from __future__ import annotations

import json
from typing import Any

from regtools import Client, descriptor, error_code, push_blob, push_image, sha256

from helpers.reference import REFERENCE_DIR
from lamina.oci import mediatypes as mt
from lamina.registry.services import STORAGE

REFERENCE = REFERENCE_DIR


async def test_tags_list_and_pagination(client: Client) -> None:
    body, _ = await push_image(client, "app", "a")
    for tag in ("c", "b", "d", "e"):
        response = await client.put(f"/v2/app/manifests/{tag}", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
        assert response.status == 201
    everything = await client.get("/v2/app/tags/list")
    assert await everything.json() == {"name": "app", "tags": ["a", "b", "c", "d", "e"]}
    assert "Link" not in everything.headers
    first = await client.get("/v2/app/tags/list", params={"n": "2"})
    assert (await first.json())["tags"] == ["a", "b"]
    assert first.headers["Link"] == '</v2/app/tags/list?n=2&last=b>; rel="next"'
    second = await client.get("/v2/app/tags/list", params={"n": "2", "last": "b"})
    assert (await second.json())["tags"] == ["c", "d"]
    last = await client.get("/v2/app/tags/list", params={"n": "2", "last": "d"})
    assert (await last.json())["tags"] == ["e"]
    assert "Link" not in last.headers
    exact = await client.get("/v2/app/tags/list", params={"n": "5"})
    assert "Link" not in exact.headers
    zero = await client.get("/v2/app/tags/list", params={"n": "0"})
    assert (await zero.json())["tags"] == []
    bad = await client.get("/v2/app/tags/list", params={"n": "-1"})
    assert bad.status == 400 and await error_code(bad) == "PAGINATION_NUMBER_INVALID"


async def test_catalog_and_pagination(client: Client) -> None:
    for name in ("zeta", "alpha/one", "alpha/two", "beta"):
        await push_image(client, name, "latest")
    everything = await client.get("/v2/_catalog")
    assert (await everything.json())["repositories"] == ["alpha/one", "alpha/two", "beta", "zeta"]
    page = await client.get("/v2/_catalog", params={"n": "3"})
    assert (await page.json())["repositories"] == ["alpha/one", "alpha/two", "beta"]
    assert page.headers["Link"] == '</v2/_catalog?n=3&last=beta>; rel="next"'
    rest = await client.get("/v2/_catalog", params={"n": "3", "last": "beta"})
    assert (await rest.json())["repositories"] == ["zeta"]
    assert "Link" not in rest.headers


async def _push_referrer(client: Client, name: str, subject: bytes, artifact_type: str, note: str) -> tuple[str, int]:
    empty = b"{}"
    await push_blob(client, name, empty)
    payload = note.encode()
    await push_blob(client, name, payload)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(empty, mt.OCI_EMPTY),
        "layers": [descriptor(payload, "text/plain")],
        "subject": descriptor(subject, mt.OCI_MANIFEST),
        "annotations": {"note": note},
    }
    body = json.dumps(doc).encode()
    response = await client.put(f"/v2/{name}/manifests/{sha256(body)}", data=body,
                                headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 201, await response.text()
    assert response.headers["OCI-Subject"] == sha256(subject)
    return sha256(body), len(body)


async def test_referrers_and_artifact_type_filter(client: Client) -> None:
    subject, subject_digest = await push_image(client, "app", "v1")
    sbom, sbom_size = await _push_referrer(client, "app", subject, "application/spdx+json", "sbom")
    sig, _ = await _push_referrer(client, "app", subject, "application/vnd.dev.cosign", "sig")
    response = await client.get(f"/v2/app/referrers/{subject_digest}")
    assert response.status == 200
    assert response.headers["Content-Type"] == mt.OCI_INDEX
    index = await response.json(content_type=None)
    assert index["schemaVersion"] == 2 and index["mediaType"] == mt.OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sbom, sig}
    assert by_digest[sbom] == {"mediaType": mt.OCI_MANIFEST, "digest": sbom, "size": sbom_size,
                               "artifactType": "application/spdx+json", "annotations": {"note": "sbom"}}
    assert "OCI-Filters-Applied" not in response.headers
    filtered = await client.get(f"/v2/app/referrers/{subject_digest}", params={"artifactType": "application/spdx+json"})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in (await filtered.json(content_type=None))["manifests"]] == [sbom]
    none = await client.get(f"/v2/app/referrers/{sha256(b'nothing refers to me')}")
    assert none.status == 200 and (await none.json(content_type=None))["manifests"] == []
    bad = await client.get("/v2/app/referrers/sha256:nope")
    assert bad.status == 400 and await error_code(bad) == "DIGEST_INVALID"


async def test_subject_need_not_exist(client: Client) -> None:
    digest, _ = await _push_referrer(client, "app", b"a subject pushed later", "application/x.later", "early")
    listed = await client.get(f"/v2/app/referrers/{sha256(b'a subject pushed later')}")
    assert [d["digest"] for d in (await listed.json(content_type=None))["manifests"]] == [digest]


def _kind(client: Client, name: str, reference: str) -> str:
    record = client.server.app[STORAGE].metadata.get_manifest(name, reference)
    assert record is not None
    return record.kind


async def _buildkit_blobs(client: Client, name: str, template: dict[str, Any]) -> dict[str, Any]:
    """Rewrite BuildKit's descriptors to blobs we have the bytes of (same media types, annotations and
    order), and push them; the image-manifest=true config is BuildKit's exact cacheconfig bytes."""
    doc = json.loads(json.dumps(template))
    key = "layers" if "layers" in doc else "manifests"
    config_bytes = (REFERENCE / "cacheconfig.raw.json").read_bytes()
    rewritten = []
    for i, entry in enumerate(doc[key]):
        if entry["mediaType"] == mt.BUILDKIT_CACHE_CONFIG:
            data = config_bytes
        else:
            data = f"buildkit layer {i} of {name}".encode()
        await push_blob(client, name, data)
        rewritten.append({**entry, "digest": sha256(data), "size": len(data)})
    doc[key] = rewritten
    if "config" in doc:
        assert sha256(config_bytes) == doc["config"]["digest"]
        await push_blob(client, name, config_bytes)
    return doc


async def test_buildkit_image_manifest_cache_is_stored_as_cache(client: Client) -> None:
    template = json.loads((REFERENCE / "cache-manifest.image-manifest-true.json").read_text())
    doc = await _buildkit_blobs(client, "app", template)
    body = json.dumps(doc).encode()
    response = await client.put("/v2/app/manifests/cache", data=body, headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 201, await response.text()
    assert _kind(client, "app", "cache") == "cache"
    got = await client.get("/v2/app/manifests/cache", headers={"Accept": f"{mt.OCI_MANIFEST}, {mt.OCI_INDEX}"})
    assert await got.read() == body
    config = await client.get(f"/v2/app/blobs/{doc['config']['digest']}")
    assert await config.read() == (REFERENCE / "cacheconfig.raw.json").read_bytes()


async def test_legacy_cache_accepted_by_default(client: Client) -> None:
    for fixture, media_type in (("legacy-oci-index", mt.OCI_INDEX), ("legacy-docker-list", mt.DOCKER_MANIFEST_LIST)):
        template = json.loads((REFERENCE / f"cache-manifest.{fixture}.json").read_text())
        doc = await _buildkit_blobs(client, "app", template)
        body = json.dumps(doc).encode()
        response = await client.put(f"/v2/app/manifests/{fixture}", data=body, headers={"Content-Type": media_type})
        assert response.status == 201, await response.text()
        assert _kind(client, "app", fixture) == "cache"
        got = await client.get(f"/v2/app/manifests/{fixture}")
        assert got.headers["Content-Type"] == media_type and await got.read() == body


async def test_legacy_cache_children_must_exist_as_blobs(client: Client) -> None:
    template = json.loads((REFERENCE / "cache-manifest.legacy-oci-index.json").read_text())
    doc = await _buildkit_blobs(client, "app", template)
    doc["manifests"][0] = {**doc["manifests"][0], "digest": sha256(b"missing layer"), "size": 13}
    response = await client.put("/v2/app/manifests/cache", data=json.dumps(doc).encode(),
                                headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 400 and await error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_legacy_cache_rejected_by_policy(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(legacy_buildkit_cache="reject")
    template = json.loads((REFERENCE / "cache-manifest.legacy-oci-index.json").read_text())
    doc = await _buildkit_blobs(client, "app", template)
    response = await client.put("/v2/app/manifests/cache", data=json.dumps(doc).encode(),
                                headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 400 and await error_code(response) == "MANIFEST_INVALID"
    message = (await response.json())["errors"][0]["message"]
    assert "image-manifest=true,oci-mediatypes=true" in message
    # the image-manifest=true form is still welcome under the strict policy
    template = json.loads((REFERENCE / "cache-manifest.image-manifest-true.json").read_text())
    good = await _buildkit_blobs(client, "app", template)
    ok = await client.put("/v2/app/manifests/cache", data=json.dumps(good).encode(),
                          headers={"Content-Type": mt.OCI_MANIFEST})
    assert ok.status == 201


async def test_legacy_cache_children_survive_garbage_collection(client: Client) -> None:
    """Accepted legacy caches record their blob children as references: a sweep keeps them."""
    import time

    from lamina.store.sweep import FilesystemSweepBlobs, sweep

    template = json.loads((REFERENCE / "cache-manifest.legacy-oci-index.json").read_text())
    doc = await _buildkit_blobs(client, "app", template)
    body = json.dumps(doc).encode()
    pushed = await client.put("/v2/app/manifests/cache", data=body, headers={"Content-Type": mt.OCI_INDEX})
    assert pushed.status == 201
    stray = await push_blob(client, "app", b"referenced by nothing")
    storage = client.server.app[STORAGE]
    result = sweep(storage.metadata, FilesystemSweepBlobs(storage.paths), list(storage.blobs.iter_digests()),
                   grace_seconds=0, now=time.time() + 60)
    assert [digest for digest, _ in result.blobs] == [stray]
    for child in doc["manifests"]:
        got = await client.get(f"/v2/app/blobs/{child['digest']}")
        assert got.status == 200 and sha256(await got.read()) == child["digest"]
    assert (await client.head(f"/v2/app/blobs/{stray}")).status == 404

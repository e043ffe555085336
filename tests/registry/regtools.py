"""Helpers for the registry HTTP tests: push blobs and manifests the way clients do, read spec errors."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp.test_utils import TestClient

from lamina.oci import mediatypes as mt

Client = TestClient  # type: ignore[type-arg]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_blob(client: Client, name: str, data: bytes) -> str:
    digest = sha256(data)
    response = await client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, data=data)
    assert response.status == 201, await response.text()
    return digest


def descriptor(data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


async def push_image(
    client: Client,
    name: str,
    tag: str | None = "latest",
    *,
    layers: list[bytes] | None = None,
    config: bytes | None = None,
    config_type: str = mt.OCI_CONFIG,
    media_type: str = mt.OCI_MANIFEST,
    layer_type: str = mt.OCI_LAYER_GZIP,
    **fields: Any,
) -> tuple[bytes, str]:
    """Push the blobs and an image manifest; return (manifest bytes, digest)."""
    config = config if config is not None else json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layers = layers if layers is not None else [b"layer for " + name.encode()]
    await push_blob(client, name, config)
    for layer in layers:
        await push_blob(client, name, layer)
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config, config_type),
        "layers": [descriptor(layer, layer_type) for layer in layers],
        **fields,
    }
    body = json.dumps(doc).encode()
    digest = sha256(body)
    response = await client.put(
        f"/v2/{name}/manifests/{tag or digest}", data=body, headers={"Content-Type": media_type}
    )
    assert response.status == 201, await response.text()
    return body, digest


async def error_code(response: Any) -> str:
    """The first spec error code of a response (asserting the body has the spec's shape)."""
    body = await response.json(content_type=None)
    assert set(body) == {"errors"}, body
    entry = body["errors"][0]
    assert {"code", "message"} <= set(entry), entry
    return str(entry["code"])

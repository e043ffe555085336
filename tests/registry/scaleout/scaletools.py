"""Client-side helpers of the scale-out tests: pushes the way clients do them (over plain HTTP, with
``requests``), and the check every scale-out test ends with: every manifest the database holds has every
blob it references, served by a replica and hashing to its digest."""

from __future__ import annotations

import hashlib
import json

import requests

from lamina.store.postgres import PostgresMetadataStore

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class PushRefused(Exception):
    """The registry answered a push with an error (the status and the spec error code in the message)."""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(base: str, name: str, data: bytes) -> str:
    digest = sha256(data)
    done = requests.post(f"{base}/v2/{name}/blobs/uploads/", params={"digest": digest}, data=data, timeout=60,
                         headers={"Content-Type": "application/octet-stream"})
    if done.status_code != 201:
        raise PushRefused(f"blob {digest} to {name}: {done.status_code} {done.text[:200]}")
    return digest


def image_manifest(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)} for layer in layers],
    }).encode()


def push_image(base: str, name: str, tag: str | None, layers: list[bytes]) -> str:
    """Push a config, the layers and the manifest (by ``tag``, or by digest); the manifest's digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "layers": len(layers), "tag": tag}).encode()
    for blob in (config, *layers):
        push_blob(base, name, blob)
    manifest = image_manifest(config, layers)
    digest = sha256(manifest)
    put = requests.put(f"{base}/v2/{name}/manifests/{tag or digest}", data=manifest, timeout=60,
                       headers={"Content-Type": OCI_MANIFEST})
    if put.status_code != 201:
        raise PushRefused(f"manifest {name}:{tag} {put.status_code} {put.text[:200]}")
    return digest


def manifests_missing_blobs(metadata_url: str, base: str) -> tuple[int, list[str]]:
    """(manifests checked, problems): every manifest in the database, each blob it references fetched from
    the replica at ``base`` (redirects followed) and re-hashed; each child manifest looked up."""
    store = PostgresMetadataStore(metadata_url)
    try:
        snapshot = store.snapshot()
    finally:
        store.close()
    problems: list[str] = []
    verified: set[tuple[str, str]] = set()
    for repository, manifest, target, size, is_manifest in snapshot.refs:
        where = f"{repository}@{manifest} -> {target}"
        if is_manifest:
            if (repository, target) not in snapshot.manifests:
                problems.append(f"{where}: child manifest missing")
            continue
        if (repository, target) in verified:
            continue
        got = requests.get(f"{base}/v2/{repository}/blobs/{target}", timeout=60)
        if got.status_code != 200:
            problems.append(f"{where}: GET {got.status_code}")
        elif len(got.content) != size or sha256(got.content) != target:
            problems.append(f"{where}: {len(got.content)} bytes hashing to {sha256(got.content)}")
        else:
            verified.add((repository, target))
    for repository, digest in snapshot.manifests:
        got = requests.get(f"{base}/v2/{repository}/manifests/{digest}", timeout=30,
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                              "application/vnd.oci.image.index.v1+json, */*"})
        if got.status_code != 200 or sha256(got.content) != digest:
            problems.append(f"{repository}@{digest}: GET {got.status_code}")
    return len(snapshot.manifests), problems

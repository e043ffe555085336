"""Concurrent image pushers for the reliability tests (imported by name: tests/reliability is on sys.path).

:func:`push_image` pushes one small image the way clients do — its layer monolithically (POST ``?digest=``
with the body) or in chunks (POST, PATCH with ``Content-Range``, PUT ``?digest=``), its config, then its
manifest by tag — and records in a :class:`Ledger` what the registry acknowledged (each 201) and what
was only attempted, so a test can tell "acknowledged, must be there" from "in flight, may be gone".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from lamina.oci import mediatypes as mt

__all__ = ["Ledger", "PushRefused", "image", "push_image"]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class PushRefused(Exception):
    """The registry answered a 4xx the caller may retry (GC raced the push); ``code`` is the spec's code."""

    def __init__(self, what: str, status: int, code: str) -> None:
        super().__init__(f"{what}: HTTP {status} {code}")
        self.status = status
        self.code = code


@dataclass
class Ledger:
    acked_blobs: dict[str, tuple[str, int]] = field(default_factory=dict)  # digest -> (repo, size)
    acked_manifests: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) -> digest
    attempted_manifests: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    sessions: list[tuple[str, int]] = field(default_factory=list)  # (upload URL, most bytes sent to it)
    server_errors: list[str] = field(default_factory=list)  # any 5xx answer


def _path(location: str) -> str:
    """An upload URL as a path and query, for a session whose ``base_url`` is the registry."""
    return str(URL(location).relative()) if URL(location).absolute else location


def image(layers: list[bytes], note: str) -> tuple[bytes, bytes]:
    """(config, manifest) of an image with these layers; ``note`` makes the config unique."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "note": note}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)} for layer in layers],
    }).encode()
    return config, manifest


async def _refusal(response: aiohttp.ClientResponse, what: str, ledger: Ledger) -> PushRefused:
    body = await response.read()
    if response.status >= 500:
        ledger.server_errors.append(f"{what}: HTTP {response.status} {body[:300]!r}")
    try:
        code = json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        code = f"non-JSON body {body[:100]!r}"
    return PushRefused(what, response.status, code)


async def _upload(http: aiohttp.ClientSession, repo: str, data: bytes, chunked: bool, ledger: Ledger) -> None:
    digest = sha256(data)
    if not chunked:
        async with http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data) as response:
            if response.status != 201:
                raise await _refusal(response, f"POST blob {repo}@{digest}", ledger)
        ledger.acked_blobs[digest] = (repo, len(data))
        return
    async with http.post(f"/v2/{repo}/blobs/uploads/") as response:
        if response.status != 202:
            raise await _refusal(response, f"POST upload {repo}", ledger)
        location = _path(response.headers["Location"])
    half = len(data) // 2
    for first, chunk in ((0, data[:half]), (half, data[half:])):
        headers = {"Content-Range": f"{first}-{first + len(chunk) - 1}", "Content-Type": "application/octet-stream"}
        ledger.sessions.append((location, first + len(chunk)))  # sent, if not yet acknowledged
        async with http.patch(location, data=chunk, headers=headers) as response:
            if response.status != 202:
                raise await _refusal(response, f"PATCH upload {repo}", ledger)
            location = _path(response.headers["Location"])
    sep = "&" if "?" in location else "?"
    async with http.put(f"{location}{sep}digest={digest}") as response:
        if response.status != 201:
            raise await _refusal(response, f"PUT upload {repo}@{digest}", ledger)
    ledger.acked_blobs[digest] = (repo, len(data))


async def push_image(http: aiohttp.ClientSession, repo: str, tags: list[str], layers: list[bytes], *,
                     chunked: bool, ledger: Ledger) -> str:
    """Push the blobs (layers chunked or not, the config monolithically), then the manifest under each tag."""
    config, manifest = image(layers, f"{repo}:{tags[0]}:{os.urandom(4).hex()}")
    for layer in layers:
        await _upload(http, repo, layer, chunked, ledger)
    await _upload(http, repo, config, False, ledger)
    digest = sha256(manifest)
    for tag in tags:
        ledger.attempted_manifests.setdefault((repo, tag), set()).add(digest)
        async with http.put(f"/v2/{repo}/manifests/{tag}", data=manifest,
                            headers={"Content-Type": mt.OCI_MANIFEST}) as response:
            if response.status != 201:
                raise await _refusal(response, f"PUT manifest {repo}:{tag}", ledger)
        ledger.acked_manifests[(repo, tag)] = digest
    return digest

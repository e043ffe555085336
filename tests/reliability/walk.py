"""Walk a registry through its API and its root, and list every inconsistency a client could hit.

Used after a crash and after GC races (imported by name: tests/reliability is on sys.path). Through the
API: every repository of the catalog, every tag of every repository (following ``Link``), each tag's
manifest GETs with a body whose sha256 is its ``Docker-Content-Digest``, and every blob it names HEADs
with the descriptor's size and GETs with bytes of the descriptor's digest; an index's children GET too.
On disk: every blob file hashes to its name, and every manifest the database lists (tagged or not) has
all the blobs it references.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from lamina.oci import mediatypes as mt
from lamina.store import open_storage

__all__ = ["Walk", "walk_api", "walk_root"]

ACCEPT = ", ".join(sorted(mt.MANIFEST_MEDIA_TYPES))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Walk:
    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    problems: list[str] = field(default_factory=list)
    tag_digests: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) -> manifest digest


async def _pages(http: aiohttp.ClientSession, path: str, key: str) -> list[str]:
    items: list[str] = []
    url: str | None = path
    while url is not None:
        async with http.get(url) as response:
            assert response.status == 200, f"GET {url}: HTTP {response.status} {await response.text()}"
            items += (await response.json())[key] or []
            link = response.headers.get("Link")
        url = urljoin(path, link.split(";")[0].strip("<> ")) if link else None
    return items


async def _check_blob(http: aiohttp.ClientSession, repo: str, desc: dict, walk: Walk) -> None:
    digest, size = desc["digest"], desc["size"]
    async with http.head(f"/v2/{repo}/blobs/{digest}") as head:
        length = head.headers.get("Content-Length")
        if head.status != 200 or length != str(size):
            walk.problems.append(f"HEAD {repo}@{digest}: HTTP {head.status}, Content-Length {length}, want {size}")
            return
    async with http.get(f"/v2/{repo}/blobs/{digest}") as got:
        body = await got.read()
        if got.status != 200 or sha256(body) != digest:
            walk.problems.append(f"GET {repo}@{digest}: HTTP {got.status}, {len(body)} bytes hashing to {sha256(body)}")
            return
    walk.blobs += 1


async def _check_manifest(http: aiohttp.ClientSession, repo: str, reference: str, walk: Walk) -> str | None:
    async with http.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}) as response:
        body = await response.read()
        header = response.headers.get("Docker-Content-Digest")
        if response.status != 200 or header != sha256(body):
            walk.problems.append(f"GET {repo}:{reference}: HTTP {response.status}, digest header {header}, "
                                 f"body hashes to {sha256(body)}")
            return None
    walk.manifests += 1
    doc = json.loads(body)
    if "manifests" in doc:
        for child in doc["manifests"]:
            if child.get("mediaType") in mt.MANIFEST_MEDIA_TYPES:
                await _check_manifest(http, repo, child["digest"], walk)
            else:
                await _check_blob(http, repo, child, walk)
    else:
        for desc in (doc["config"], *doc.get("layers", [])):
            await _check_blob(http, repo, desc, walk)
    return header


async def walk_api(base_url: str, concurrency: int = 16) -> Walk:
    """Everything a client can list, read back and verified; problems named one per line."""
    walk = Walk()
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(base_url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        repositories = await _pages(http, "/v2/_catalog?n=100", "repositories")
        walk.repositories = len(repositories)

        async def one_tag(repo: str, tag: str) -> None:
            async with limit:
                digest = await _check_manifest(http, repo, tag, walk)
                if digest is not None:
                    walk.tag_digests[(repo, tag)] = digest

        jobs = []
        for repo in repositories:
            tags = await _pages(http, f"/v2/{repo}/tags/list?n=100", "tags")
            walk.tags += len(tags)
            jobs += [one_tag(repo, tag) for tag in tags]
        await asyncio.gather(*jobs)
    return walk


def walk_root(root: Path) -> Walk:
    """On disk: blob files that do not hash to their name, and manifests (tagged or not) whose blobs are
    gone. Reads the database while the server may still run (SQLite WAL readers do not block writers)."""
    walk = Walk()
    storage = open_storage(root)
    on_disk: set[str] = set()
    for digest in storage.blobs.iter_digests():
        data = storage.paths.blob(digest).read_bytes()
        if sha256(data) != str(digest):
            walk.problems.append(f"blob file {digest} hashes to {sha256(data)}")
        on_disk.add(str(digest))
        walk.blobs += 1
    for repository in storage.metadata.repository_infos():
        walk.repositories += 1
        for info in storage.metadata.manifest_infos(repository.name):
            walk.manifests += 1
            walk.tags += len(info.tags)
            missing = [ref.digest for ref in info.references if ref.digest not in on_disk and not ref.is_manifest]
            if missing:
                walk.problems.append(f"manifest {repository.name}@{info.digest} (tags {list(info.tags)}) "
                                     f"references blobs that are gone: {missing}")
    return walk

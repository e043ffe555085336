"""Manifest, tag and referrers operations (distribution-spec "Pulling manifests", "Pushing manifests",
"Content discovery", "Deleting manifests", "Listing referrers").

The digest of a manifest is always computed from the bytes we received or sent: fetched by digest,
the bytes must hash to it; fetched by tag, a ``Docker-Content-Digest`` that disagrees with the bytes is
an error, never silently believed. Referrers fall back to the spec's tag schema (``sha256-<hex>``)
for registries without the API (CNCF distribution 2.8 among them).
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from ..oci import Descriptor, Digest, DigestError, FormatError, ImageIndex, digest_of, parse_digest, parse_manifest
from ..oci import mediatypes as mt
from .auth import pull_scope, push_scope
from .errors import DigestMismatch, NotFound, RegistryError
from .http11 import Answer
from .session import Transport
from .urls import URL

__all__ = ["ALL_MANIFEST_TYPES", "FetchedManifest", "ManifestInfo", "ManifestOps"]

ALL_MANIFEST_TYPES: tuple[str, ...] = (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_V2)
_MAX_MANIFEST = 16 << 20
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class FetchedManifest(NamedTuple):
    data: bytes
    media_type: str
    digest: Digest


class ManifestInfo(NamedTuple):
    digest: Digest
    media_type: str
    size: int


def _as_digest(reference: str) -> Digest | None:
    if ":" not in reference:
        return None
    try:
        return parse_digest(reference)
    except DigestError:
        return None


def _media_type(content_type: str | None, data: bytes | None) -> str:
    """The served Content-Type, unless it is a generic one; then the document's own mediaType."""
    served = (content_type or "").split(";", 1)[0].strip()
    if served in mt.MANIFEST_MEDIA_TYPES or data is None:
        return served
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return served
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    return declared if isinstance(declared, str) else served


async def _read_limited(resp: Answer, limit: int) -> bytes:
    """The whole body, but never more than ``limit`` bytes in memory (StreamReader.read(n) may return less)."""
    parts: list[bytes] = []
    total = 0
    async for chunk in resp.iter_chunked(1 << 16):
        parts.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(parts)[:limit]


class ManifestOps:
    """Mixin for :class:`lamina.client.RegistryClient`; needs ``self.transport``."""

    transport: Transport

    def _mismatch(self, repo: str, reference: str, expected: str, actual: str, detail: str) -> DigestMismatch:
        return DigestMismatch(expected, actual, registry=self.transport.registry, repository=repo,
                              obj=f"manifest {reference}", detail=detail)

    async def get_manifest(
        self, repo: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> FetchedManifest:
        """Fetch a manifest by tag or digest; the returned digest is the verified digest of its bytes."""
        pinned = _as_digest(reference)
        obj = f"manifest {reference}"
        async with self.transport.request(
            "GET", f"/v2/{repo}/manifests/{reference}", scopes=[pull_scope(repo)], repository=repo, obj=obj,
            headers={"Accept": ", ".join(accept)},
        ) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > _MAX_MANIFEST:
                raise RegistryError(resp.status, "MANIFEST_TOO_LARGE", f"{length} bytes (limit {_MAX_MANIFEST})",
                                    registry=self.transport.registry, repository=repo, obj=obj)
            data = await _read_limited(resp, _MAX_MANIFEST + 1)
            if len(data) > _MAX_MANIFEST:
                raise RegistryError(resp.status, "MANIFEST_TOO_LARGE", f"more than {_MAX_MANIFEST} bytes",
                                    registry=self.transport.registry, repository=repo, obj=obj)
            self.transport.stats.add_down("manifest", len(data))
            server = resp.headers.get("Docker-Content-Digest")
            content_type = resp.headers.get("Content-Type")
        digest = self._verify(repo, reference, data, pinned, server)
        return FetchedManifest(data, _media_type(content_type, data), digest)

    def _verify(self, repo: str, reference: str, data: bytes, pinned: Digest | None, server: str | None) -> Digest:
        if pinned is not None:
            actual = digest_of(data, pinned.algorithm)
            if actual != pinned:
                raise self._mismatch(repo, reference, str(pinned), str(actual), f"{len(data)} bytes served")
            return pinned
        claimed = _as_digest(server) if server else None
        algorithm = claimed.algorithm if claimed is not None else "sha256"
        actual = digest_of(data, algorithm)
        if claimed is not None and claimed != actual:
            raise self._mismatch(repo, reference, str(claimed), str(actual),
                                 "the registry's Docker-Content-Digest disagrees with the bytes served")
        return actual

    async def head_manifest(self, repo: str, reference: str,
                            accept: tuple[str, ...] = ALL_MANIFEST_TYPES) -> ManifestInfo | None:
        """Digest, media type and size of a manifest, or None if absent (falls back to GET if HEAD is terse)."""
        obj = f"manifest {reference}"
        async with self.transport.request(
            "HEAD", f"/v2/{repo}/manifests/{reference}", scopes=[pull_scope(repo)], repository=repo, obj=obj,
            headers={"Accept": ", ".join(accept)}, ok=(200, 404),
        ) as resp:
            if resp.status == 404:
                return None
            server = resp.headers.get("Docker-Content-Digest")
            media_type = _media_type(resp.headers.get("Content-Type"), None)
            length = resp.headers.get("Content-Length", "")
        claimed = _as_digest(server) if server else None
        pinned = _as_digest(reference)
        if pinned is not None and claimed is not None and claimed != pinned:
            raise self._mismatch(repo, reference, str(pinned), str(claimed), "HEAD answered another digest")
        if claimed is None or media_type not in mt.MANIFEST_MEDIA_TYPES or not length.isdigit():
            try:
                fetched = await self.get_manifest(repo, reference, accept)
            except NotFound:
                return None
            return ManifestInfo(fetched.digest, fetched.media_type, len(fetched.data))
        return ManifestInfo(claimed, media_type, int(length))

    async def put_manifest(
        self, repo: str, reference: str, data: bytes, media_type: str, *,
        if_match: Digest | None = None, create_only: bool = False,
    ) -> Digest:
        """Push ``data`` under a tag or its digest; returns the digest (checked against the registry's).

        ``if_match`` sends ``If-Match: "<digest>"`` (move the tag only if it still names that manifest),
        ``create_only`` sends ``If-None-Match: *`` (only if the tag does not exist): lamina's registry
        answers 412, raised as :class:`PreconditionFailed`; registries without conditional updates
        (CNCF distribution, ECR) ignore both headers and write unconditionally.
        """
        digest, _ = await self.put_manifest_checked(repo, reference, data, media_type, if_match=if_match,
                                                    create_only=create_only)
        return digest

    async def put_manifest_checked(
        self, repo: str, reference: str, data: bytes, media_type: str, *,
        if_match: Digest | None = None, create_only: bool = False,
    ) -> tuple[Digest, bool]:
        """:meth:`put_manifest`, also telling whether the registry evaluated the condition: True when its
        201 carries ``Lamina-Tag-Condition: checked`` (lamina's extension); False when it may have written
        unconditionally (then only a re-read tells whether another writer's update was lost)."""
        pinned = _as_digest(reference)
        digest = digest_of(data, pinned.algorithm if pinned is not None else "sha256")
        if pinned is not None and pinned != digest:
            raise self._mismatch(repo, reference, str(pinned), str(digest), "the manifest bytes given to push")
        if if_match is not None and create_only:
            raise ValueError("put_manifest: if_match and create_only exclude each other")
        headers = {"Content-Type": media_type}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        elif create_only:
            headers["If-None-Match"] = "*"
        obj = f"manifest {reference}"
        async with self.transport.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", scopes=[push_scope(repo)], repository=repo, obj=obj,
            ok=(201, 200), headers=headers, body=data,
        ) as resp:
            server = resp.headers.get("Docker-Content-Digest")
            checked = resp.headers.get("Lamina-Tag-Condition", "").strip().lower() == "checked"
        self.transport.stats.add_up("manifest", len(data))
        if server and _as_digest(server) != digest:
            raise self._mismatch(repo, reference, str(digest), server, "the registry recorded another digest")
        return digest, checked and (if_match is not None or create_only)

    async def delete_manifest(self, repo: str, reference: str) -> None:
        async with self.transport.request(
            "DELETE", f"/v2/{repo}/manifests/{reference}", scopes=[f"repository:{repo}:delete"],
            repository=repo, obj=f"manifest {reference}", ok=(202, 200, 204),
        ):
            pass

    def _referrers_page(self, data: bytes, content_type: str | None, repo: str, obj: str) -> ImageIndex:
        try:
            index = parse_manifest(data, _media_type(content_type, data))
        except FormatError as exc:
            raise RegistryError(200, "INVALID_RESPONSE", f"referrers response: {exc}",
                                registry=self.transport.registry, repository=repo, obj=obj) from None
        if not isinstance(index, ImageIndex):
            raise RegistryError(200, "INVALID_RESPONSE", "referrers response is not an image index",
                                registry=self.transport.registry, repository=repo, obj=obj)
        return index

    async def list_tags(self, repo: str, *, page_size: int | None = None) -> list[str]:
        """All tags of ``repo``, following ``Link: <...>; rel="next"`` pagination."""
        tags: list[str] = []
        url: str | URL = f"/v2/{repo}/tags/list"
        params = {"n": str(page_size)} if page_size else None
        for _ in range(100_000):
            async with self.transport.request("GET", url, scopes=[pull_scope(repo)], repository=repo,
                                              obj="tag list", params=params) as resp:
                doc = await resp.json()
                link = resp.headers.get("Link")
                base = resp.url
            page = doc.get("tags") if isinstance(doc, dict) else None
            if page is not None and (not isinstance(page, list) or not all(isinstance(t, str) for t in page)):
                raise RegistryError(200, "INVALID_RESPONSE", "'tags' is not a list of strings",
                                    registry=self.transport.registry, repository=repo, obj="tag list")
            tags.extend(page or [])
            match = _LINK_NEXT.search(link or "")
            if not match:
                return tags
            url, params = self.transport.resolve(match.group(1), base), None
        raise RegistryError(200, "INVALID_RESPONSE", "tag list pagination does not end",
                            registry=self.transport.registry, repository=repo, obj="tag list")

    async def referrers(self, repo: str, digest: Digest | str, *, artifact_type: str | None = None) -> ImageIndex:
        """Manifests whose ``subject`` is ``digest`` (Referrers API, else the ``sha256-<hex>`` tag schema).

        A registry may page the answer (``Link: <...>; rel="next"``, distribution-spec end-12): every page
        is read and their descriptors joined."""
        digest = parse_digest(str(digest))
        obj = f"referrers of {digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        url: str | URL = f"/v2/{repo}/referrers/{digest}"
        pages: list[ImageIndex] = []
        for _ in range(100_000):
            try:
                async with self.transport.request(
                    "GET", url, scopes=[pull_scope(repo)], repository=repo, obj=obj,
                    params=params, headers={"Accept": mt.OCI_INDEX},
                ) as resp:
                    data = await _read_limited(resp, _MAX_MANIFEST)
                    self.transport.stats.add_down("manifest", len(data))
                    filtered = "artifactType" in resp.headers.get("OCI-Filters-Applied", "")
                    content_type = resp.headers.get("Content-Type")
                    link, base = resp.headers.get("Link"), resp.url
            except NotFound:
                if pages:
                    raise
                try:
                    fetched = await self.get_manifest(repo, f"{digest.algorithm}-{digest.encoded}", (mt.OCI_INDEX,))
                except NotFound:
                    return ImageIndex(mt.OCI_INDEX, ())
                data, content_type, filtered, link = fetched.data, fetched.media_type, False, None
            pages.append(self._referrers_page(data, content_type, repo, obj))
            match = _LINK_NEXT.search(link or "")
            if not match:
                break
            url, params = self.transport.resolve(match.group(1), base), None
        else:
            raise RegistryError(200, "INVALID_RESPONSE", "referrers pagination does not end",
                                registry=self.transport.registry, repository=repo, obj=obj)
        index = pages[0]
        if len(pages) > 1:
            joined = tuple(d for page in pages for d in page.manifests)
            index = ImageIndex(index.media_type, joined, index.artifact_type, index.subject, index.annotations)
        if artifact_type and not filtered:
            keep: tuple[Descriptor, ...] = tuple(d for d in index.manifests if d.artifact_type == artifact_type)
            index = ImageIndex(index.media_type, keep, index.artifact_type, index.subject, index.annotations)
        return index

"""Images the build reads from registries: FROM bases and ``COPY --from=<image>``, resolved lazily.

Resolving fetches the manifest (descending an index to the build platform) and the config only; the
layers become lazy :class:`LayerRef` s whose ``source`` is the image's repository. A layer's bytes
are downloaded (digest-verified by the client, then published into the content store) only when a
step must execute on top of it or an output needs them. Each image is resolved once per build.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lamina.build.cache.base import LayerRef
from lamina.build.contentstore import ContentError, ContentStore
from lamina.client import ClientPool, RegistryUnreachable, resolve_image
from lamina.oci import Descriptor, Digest, ImageConfig, Platform, parse_reference

__all__ = [
    "LAYOUT_REF_PREFIX",
    "LAYOUT_SOURCE_PREFIX",
    "BlobSources",
    "ImageSource",
    "RegistryImages",
    "ResolveRecords",
    "SourceImage",
    "source_image",
]

LAYOUT_SOURCE_PREFIX = "oci-layout:"  # a LayerRef.source naming a local OCI layout dir (--cache-from type=local)
LAYOUT_REF_PREFIX = "oci-layout://"  # an image ref in a local OCI layout (--build-context NAME=oci-layout://...)


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A resolved base image: its manifest digest and config, its layers, and the repository that holds them."""

    reference: str  # as written in the Dockerfile
    repository: str  # "host/repo": where its blobs live (lazy pulls, cross-repo mounts)
    manifest_digest: Digest
    config: ImageConfig
    layers: tuple[LayerRef, ...]


class BlobSources(Protocol):
    """Where blobs are known to live remotely (the local cache index keeps this), for cross-repo mounts
    by the image exporter and the cache exporter alike."""

    def sources(self, digest: Digest) -> list[str]: ...

    def add_source(self, digest: Digest, repository: str) -> None: ...


class ImageSource(Protocol):
    async def resolve(self, ref: str, platform: Platform) -> SourceImage: ...

    async def fetch(self, layer: LayerRef) -> Path: ...

    def stream(self, layer: LayerRef) -> AsyncIterator[bytes]: ...


def split_repository(source: str) -> tuple[str, str]:
    """``host/repo/name`` -> (``host``, ``repo/name``)."""
    host, _, repo = source.partition("/")
    return host, repo


def source_image(
    ref: str, repository: str, manifest_digest: Digest, layers: Sequence[Descriptor], config: ImageConfig,
    source: str,
) -> SourceImage:
    """An image's lazy layer chain: each layer with its diffID, its history time, and where its blob is."""
    diff_ids = config.diff_ids
    if len(layers) != len(diff_ids):
        raise ValueError(
            f"image {ref}: manifest has {len(layers)} layers but its config lists {len(diff_ids)} diff_ids"
        )
    times = [h.created for h in config.history if not h.empty_layer]
    if len(times) != len(layers):
        times = [config.created] * len(layers)
    refs = tuple(
        LayerRef(descriptor, diff_id, created, source)
        for descriptor, diff_id, created in zip(layers, diff_ids, times, strict=True)
    )
    return SourceImage(ref, repository, manifest_digest, config, refs)


class ResolveRecords(Protocol):
    """The local record of base image resolutions (:class:`lamina.build.localimages.BaseRecords`)."""

    def save(self, ref: str, platform: Platform, image: SourceImage, manifest: bytes, config: bytes) -> None: ...

    def fallback(self, ref: str, platform: Platform, error: RegistryUnreachable) -> SourceImage: ...


class RegistryImages:
    """ImageSource over the registry client; ``fetch`` makes a layer blob local in the content store.

    With ``records``, every resolution is recorded and a registry that cannot be reached falls back to
    the last one (``--pull`` passes none: always the registry).
    """

    def __init__(self, pool: ClientPool, content: ContentStore, *, records: ResolveRecords | None = None) -> None:
        self.pool = pool
        self.content = content
        self.records = records
        self._resolved: dict[tuple[str, str], asyncio.Task[SourceImage]] = {}
        self._fetching: dict[Digest, asyncio.Task[Path]] = {}

    async def resolve(self, ref: str, platform: Platform) -> SourceImage:
        key = (ref, str(platform))
        if key not in self._resolved:
            self._resolved[key] = asyncio.ensure_future(self._resolve(ref, platform))
        return await self._resolved[key]

    async def _resolve(self, ref: str, platform: Platform) -> SourceImage:
        if ref.startswith(LAYOUT_REF_PREFIX):  # --build-context NAME=oci-layout://PATH[:TAG|@DIGEST]
            from lamina.build.localimages import resolve_layout

            return await asyncio.to_thread(resolve_layout, ref, platform)
        reference = parse_reference(ref)
        client = self.pool.get(reference.registry)
        try:
            image = await resolve_image(client, reference.repository, reference.reference, platform)
        except RegistryUnreachable as exc:
            if self.records is None:
                raise
            return self.records.fallback(ref, platform, exc)  # the last resolution, unless --pull
        source = f"{reference.registry}/{reference.repository}"
        resolved = source_image(ref, source, image.manifest_digest, image.manifest.layers, image.config, source)
        if self.records is not None:
            self.records.save(ref, platform, resolved, image.manifest_bytes, image.config_bytes)
        return resolved

    async def fetch(self, layer: LayerRef) -> Path:
        digest = layer.descriptor.digest
        if self.content.has(digest):
            return self.content.path(digest)
        task = self._fetching.get(digest)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._fetching[digest] = asyncio.ensure_future(self._download(layer))  # failures are retried
        return await task

    async def stream(self, layer: LayerRef) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive, to unpack while downloading; the client verifies the digest
        at the end (a stream that breaks off or does not match raises: the consumer discards what it got).

        No compressed copy is kept: the unpacked layer is what later steps use, and an output that needs
        the blob itself (another registry, an OCI tar) fetches it again from ``layer.source``, as for any
        lazy layer. Keeping one cost a second hash and a disk write of every pulled byte on the event
        loop, 0.4-0.5 s of a 270 MB cache pull here, for a copy a CI runner almost never reads."""
        digest = layer.descriptor.digest
        if layer.source is None:
            raise ContentError(f"layer {digest} is neither in the local content store nor in a known registry")
        if layer.source.startswith(LAYOUT_SOURCE_PREFIX):
            with open(await self.fetch(layer), "rb") as fh:
                while chunk := await asyncio.to_thread(fh.read, 1 << 20):
                    yield chunk
            return
        host, repo = split_repository(layer.source)
        async for chunk in self.pool.get(host).get_blob(repo, digest, size=layer.descriptor.size):
            yield chunk

    async def _download(self, layer: LayerRef) -> Path:
        digest = layer.descriptor.digest
        if layer.source is None:
            raise ContentError(f"layer {digest} is neither in the local content store nor in a known registry")
        if layer.source.startswith(LAYOUT_SOURCE_PREFIX):  # copied in and verified by digest
            path = Path(layer.source.removeprefix(LAYOUT_SOURCE_PREFIX)) / "blobs" / digest.algorithm / digest.encoded
            await asyncio.to_thread(self.content.ingest_file, path, digest)
            return self.content.path(digest)
        host, repo = split_repository(layer.source)
        temp = self.content.ingest_path()
        try:
            await self.pool.get(host).download_blob(repo, digest, temp, size=layer.descriptor.size)
            self.content.adopt(temp, digest)
        finally:
            temp.unlink(missing_ok=True)
        return self.content.path(digest)

"""Outputs of a build: push to a registry, an OCI image-layout tarball, or the root filesystem in a dir.

All three start from the same :class:`ExportImage` (config + manifest bytes + the lazy layer chain).
A push makes every target repository hold each blob — HEAD skip, cross-repo mount from the base
image's repository on the same registry, upload otherwise, all layers concurrently — then puts the
manifest once per tag. The tarball and the directory need the bytes, so they fetch lazy layers.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build.cache.base import LayerRef
from lamina.build.imageconfig import image_manifest
from lamina.build.images import BlobSources, ImageSource, split_repository
from lamina.client import ClientPool, RegistryClient
from lamina.oci import Descriptor, Digest, ImageConfig, digest_of, parse_reference
from lamina.oci import mediatypes as mt
from lamina.oci.layout import REF_NAME_ANNOTATION, blob_path, index_json, oci_layout_json

if TYPE_CHECKING:  # tarfile is imported by write_oci_tar only: a pushed build never writes a tar
    import tarfile

__all__ = ["ExportImage", "parse_output", "push_image", "write_local", "write_oci_tar"]


@dataclass(frozen=True)
class ExportImage:
    config: ImageConfig
    config_bytes: bytes
    manifest_bytes: bytes
    layers: tuple[LayerRef, ...]

    @classmethod
    def create(cls, config: ImageConfig, layers: Sequence[LayerRef]) -> ExportImage:
        config_bytes = config.to_bytes()
        manifest = image_manifest(config_bytes, layers)
        return cls(config, config_bytes, manifest.to_bytes(), tuple(layers))

    @property
    def digest(self) -> Digest:
        return digest_of(self.manifest_bytes)


def parse_output(text: str) -> dict[str, str]:
    """``type=oci,dest=out.tar`` -> {"type": "oci", "dest": "out.tar"}; a bare path means type=local."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            if len(text.split(",")) == 1:
                return {"type": "local", "dest": text}
            raise ValueError(f"invalid --output {text!r}: expected key=value pairs")
        fields[key.strip()] = value.strip()
    kind = fields.get("type")
    if kind not in ("registry", "oci", "local", "image"):
        raise ValueError(f"invalid --output {text!r}: type must be registry, oci or local")
    if kind in ("oci", "local") and not fields.get("dest"):
        raise ValueError(f"invalid --output {text!r}: type={kind} needs dest=PATH")
    return fields


async def push_image(
    pool: ClientPool, refs: Sequence[str], image: ExportImage, images: ImageSource, known: BlobSources
) -> Digest:
    """Push blobs (concurrently) then the manifest under each ref; returns the manifest digest."""
    for ref in refs:
        reference = parse_reference(ref)
        client = pool.get(reference.registry)
        repo = reference.repository
        await asyncio.gather(
            *(_push_layer(client, reference.registry, repo, layer, images, known) for layer in image.layers)
        )
        config_digest = digest_of(image.config_bytes)
        await client.push_blob(repo, config_digest, len(image.config_bytes), image.config_bytes, kind="config")
        await client.put_manifest(repo, reference.reference, image.manifest_bytes, mt.OCI_MANIFEST)
    return image.digest


async def _push_layer(
    client: RegistryClient, registry: str, repo: str, layer: LayerRef, images: ImageSource, known: BlobSources
) -> None:
    """HEAD skip; else mount from a repository of the same registry known to hold it; else upload."""
    digest = layer.descriptor.digest
    candidates = [layer.source] if layer.source else []
    candidates += known.sources(digest)
    mount_from = list(dict.fromkeys(r for host, r in map(split_repository, candidates) if host == registry))
    if layer.source is not None and (  # a lazy layer (base image, remote cache hit): never download what
        await client.head_blob(repo, digest) is not None  # the target has or can mount from a sibling repo
        or (mount_from and await client.mount_blob(repo, digest, mount_from))
    ):
        known.add_source(digest, f"{registry}/{repo}")
        return
    path = await images.fetch(layer)
    await client.push_blob(repo, digest, layer.descriptor.size, path, mount_from=mount_from)
    known.add_source(digest, f"{registry}/{repo}")


async def write_oci_tar(dest: Path, image: ExportImage, images: ImageSource, *, ref_name: str | None) -> None:
    """An OCI image layout as one tar (what ``docker buildx --output type=oci`` writes), atomically."""
    paths = [await images.fetch(layer) for layer in image.layers]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    annotations = {REF_NAME_ANNOTATION: ref_name} if ref_name else None
    top = Descriptor(mt.OCI_MANIFEST, image.digest, len(image.manifest_bytes), annotations=annotations)

    def write() -> None:
        import tarfile

        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", oci_layout_json())
            _add_bytes(tar, "index.json", index_json([top]))
            _add_bytes(tar, blob_path(image.digest), image.manifest_bytes)
            _add_bytes(tar, blob_path(digest_of(image.config_bytes)), image.config_bytes)
            seen: set[Digest] = set()
            for layer, path in zip(image.layers, paths, strict=True):
                if layer.descriptor.digest in seen:
                    continue
                seen.add(layer.descriptor.digest)
                info = tarfile.TarInfo(blob_path(layer.descriptor.digest))
                info.size = layer.descriptor.size
                info.mode = 0o444
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)

    try:
        await asyncio.to_thread(write)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tar.tarinfo(name)  # TarFile.tarinfo is TarInfo: no module-level tarfile import
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


async def write_local(dest: Path, lowers_top_first: Sequence[Path], view: Callable[..., Any]) -> None:
    """Copy the final root filesystem (the merged view of the layers) into ``dest``, owners and modes kept."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def copy() -> None:
        with view(list(lowers_top_first)) as root:
            result = subprocess.run(
                ["cp", "-a", "--no-preserve=context", f"{root}/.", f"{dest}/"],
                capture_output=True, text=True, check=False,
            )
        if result.returncode != 0:
            raise OSError(f"copying the root filesystem to {dest} failed: {result.stderr.strip()}")

    await asyncio.to_thread(copy)

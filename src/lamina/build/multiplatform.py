"""Multi-platform outputs: one image per target platform, published as one OCI image index.

``--platform linux/amd64,linux/arm64`` solves one graph per platform (the builder; see docs/build.md
"Platforms") and exports what buildx with BuildKit v0.32 exports (attestations off):

- the index: ``application/vnd.oci.image.index.v1+json`` listing each platform's manifest in
  ``--platform`` order, every entry with ``platform`` {architecture, os[, variant]} taken from the image
  config, no annotations;
- ``type=registry`` / ``--push``: each image's blobs and manifest pushed by digest, then the index under
  every tag (a registry thus never holds a tag pointing at an index with a missing child);
- ``type=oci``: one image-layout tar whose ``index.json`` names the index (with the ref name annotation)
  and whose blobs hold every image;
- ``type=local``: one directory per platform, named as buildx's ``platform-split`` names them
  (``linux_amd64``, ``linux_arm_v7``).

A single-platform build keeps the plain image manifest (no index), as BuildKit does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.build.execution import StepExecutor
from lamina.build.exporter import ExportImage, push_image, write_local
from lamina.build.images import BlobSources, ImageSource
from lamina.build.layouttar import LayoutTar, write_layout_tar
from lamina.build.progress import Progress
from lamina.client import ClientPool
from lamina.oci import (
    Descriptor,
    Digest,
    ImageConfig,
    ImageIndex,
    Platform,
    digest_of,
    format_platform,
    normalize_platform,
    parse_reference,
)
from lamina.oci import mediatypes as mt
from lamina.oci.layout import index_entry, index_json, oci_layout_json

__all__ = ["ExportIndex", "PlatformImage", "base_platform_warning", "check_outputs", "export_index", "platform_dir",
           "push_index", "write_oci_index_tar"]


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image of a build, with the annotations of its index entry."""

    platform: Platform  # the target platform the image was built for
    image: ExportImage
    descriptor_annotations: Mapping[str, str] | None = None  # on its index entry (--annotation manifest-descriptor:)


def platform_dir(platform: Platform) -> str:
    """buildx's per-platform directory name of ``type=local`` (``linux/arm/v7`` -> ``linux_arm_v7``)."""
    return format_platform(platform).replace("/", "_")


def _descriptor_platform(image: ExportImage) -> Platform:
    """The index entry's platform: the image config's architecture, os and variant (what it says it runs on)."""
    config = image.config
    return Platform(config.architecture, config.os, config.variant or None)


@dataclass(frozen=True)
class ExportIndex:
    """The OCI image index of a multi-platform build: its images in ``--platform`` order and its bytes."""

    images: tuple[PlatformImage, ...]
    index_bytes: bytes

    @classmethod
    def create(cls, images: Sequence[PlatformImage], annotations: Mapping[str, str] | None = None) -> ExportIndex:
        """The index of ``images`` in order; ``annotations`` (``--annotation index:``) go in the index."""
        manifests = tuple(
            Descriptor(mt.OCI_MANIFEST, item.image.digest, len(item.image.manifest_bytes),
                       annotations=dict(item.descriptor_annotations) if item.descriptor_annotations else None,
                       platform=_descriptor_platform(item.image))
            for item in images
        )
        index = ImageIndex(mt.OCI_INDEX, manifests, annotations=dict(annotations) if annotations else None)
        return cls(tuple(images), index.to_bytes())

    @property
    def digest(self) -> Digest:
        return digest_of(self.index_bytes)


async def push_index(
    pool: ClientPool, refs: Sequence[str], index: ExportIndex, images: ImageSource, known: BlobSources
) -> Digest:
    """Push every image (blobs, config, manifest by digest), then the index under each of ``refs``."""
    for ref in refs:
        reference = parse_reference(ref)
        repository = f"{reference.registry}/{reference.repository}"
        for item in index.images:
            await push_image(pool, [f"{repository}@{item.image.digest}"], item.image, images, known)
        client = pool.get(reference.registry)
        await client.put_manifest(reference.repository, reference.reference, index.index_bytes, mt.OCI_INDEX)
    return index.digest


async def write_oci_index_tar(
    dest: Path, index: ExportIndex, images: ImageSource, *, ref_name: str | None,
    descriptor_annotations: Mapping[str, str] | None = None,
) -> None:
    """An OCI image layout tar holding the index and every platform's image, written atomically;
    ``descriptor_annotations`` (``--annotation index-descriptor:``) go on the index's index.json entry."""
    layers: dict[Digest, tuple[int, Path]] = {}
    for item in index.images:
        for layer in item.image.layers:
            if layer.descriptor.digest not in layers:
                layers[layer.descriptor.digest] = (layer.descriptor.size, await images.fetch(layer))
    top = index_entry(mt.OCI_INDEX, index.digest, len(index.index_bytes), ref_name=ref_name,
                      annotations=descriptor_annotations)

    def fill(tar: LayoutTar) -> None:
        tar.add_bytes("oci-layout", oci_layout_json())
        tar.add_bytes("index.json", index_json([top]))
        tar.add_blob_bytes(index.digest, index.index_bytes)
        for item in index.images:
            tar.add_blob_bytes(item.image.digest, item.image.manifest_bytes)
            tar.add_blob_bytes(digest_of(item.image.config_bytes), item.image.config_bytes)
        for digest, (size, path) in layers.items():
            tar.add_blob_file(digest, size, path)

    await write_layout_tar(dest, fill)


def base_platform_warning(ref: str, config: ImageConfig, platform: Platform) -> str | None:
    """BuildKit's ``InvalidBaseImagePlatform`` warning: a single-platform base whose config names another
    platform than the stage's (the build goes on with it, as BuildKit's does); None when they agree."""
    got = normalize_platform(Platform(config.architecture, config.os, config.variant or None))
    want = normalize_platform(platform)
    if (got.os, got.architecture, got.variant) == (want.os, want.architecture, want.variant):
        return None
    return (f'InvalidBaseImagePlatform: Base image {ref} was pulled with platform "{format_platform(got)}", '
            f'expected "{format_platform(want)}" for current build')


def check_outputs(outputs: Sequence[Mapping[str, str]], platforms: Sequence[Platform]) -> None:
    """Refuse, before any work, an output that cannot hold several platforms' images (as BuildKit does)."""
    if len(platforms) < 2:
        return
    for output in outputs:
        if output.get("type") == "docker":
            names = ", ".join(format_platform(p) for p in platforms)
            raise ValueError(
                f"--output type=docker holds one image (docker load cannot take an index), but --platform names "
                f"{len(platforms)} ({names}): build one platform, or use type=oci or type=registry"
            )


async def export_index(
    index: ExportIndex,
    refs: Sequence[str],
    outputs: Sequence[Mapping[str, str]],
    tags: Sequence[str],
    pool: ClientPool,
    images: ImageSource,
    executor: StepExecutor,
    progress: Progress,
    known: BlobSources,
    *,
    descriptor_annotations: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Every output of a multi-platform build (see the module docstring); returns the references pushed."""
    names = ", ".join(format_platform(item.platform) for item in index.images)
    progress.message(f"writing image index {index.digest} ({names})")
    if refs:
        await push_index(pool, refs, index, images, known)
        for ref in refs:
            progress.message(f"pushing {ref} ({index.digest}) done")
    for output in outputs:
        if output["type"] == "oci":
            ref_name = output.get("name") or (parse_reference(tags[0]).tag if tags else None)
            await write_oci_index_tar(Path(output["dest"]), index, images, ref_name=ref_name,
                                      descriptor_annotations=descriptor_annotations)
            progress.message(f"exporting to oci image format {output['dest']} done")
        elif output["type"] == "local":
            for item in index.images:
                dest = Path(output["dest"]) / platform_dir(item.platform)
                lowers = await executor.materialize(item.image.layers)
                await write_local(dest, lowers[::-1], executor.snapshotter.view)
                progress.message(f"copying files to {dest} done")
    return tuple(refs)

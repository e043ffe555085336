"""Outputs of a build: push to a registry, an OCI image-layout tarball, or the root filesystem in a dir.

All three start from the same :class:`ExportImage` (config + manifest bytes + the lazy layer chain).
A push makes every target repository hold each blob — HEAD skip, cross-repo mount from the base
image's repository on the same registry, upload otherwise, all layers concurrently — then puts the
manifest once per tag. The tarball and the directory need the bytes, so they fetch lazy layers.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build.cache.base import LayerRef
from lamina.build.imageconfig import image_manifest
from lamina.build.images import BlobSources, ImageSource, split_repository
from lamina.build.layouttar import LayoutTar, write_layout_tar
from lamina.client import ClientPool, RegistryClient
from lamina.oci import Digest, ImageConfig, digest_of, parse_reference
from lamina.oci import mediatypes as mt
from lamina.oci.layout import index_entry, index_json, oci_layout_json

if TYPE_CHECKING:  # tarfile is imported by write_oci_tar only: a pushed build never writes a tar
    pass

__all__ = ["ExportImage", "insecure_output_registries", "parse_output", "push_image", "write_local", "write_oci_tar"]


@dataclass(frozen=True)
class ExportImage:
    """An image ready to export: its config and manifest bytes (digests fixed) and its lazy layer chain."""

    config: ImageConfig
    config_bytes: bytes
    manifest_bytes: bytes
    layers: tuple[LayerRef, ...]

    @classmethod
    def create(
        cls, config: ImageConfig, layers: Sequence[LayerRef], annotations: Mapping[str, str] | None = None
    ) -> ExportImage:
        """The image manifest of ``config`` and ``layers``; ``annotations`` (``--annotation manifest:``) go in it."""
        config_bytes = config.to_bytes()
        manifest = image_manifest(config_bytes, layers)
        if annotations:
            manifest = replace(manifest, annotations=dict(annotations))
        return cls(config, config_bytes, manifest.to_bytes(), tuple(layers))

    @property
    def digest(self) -> Digest:
        return digest_of(self.manifest_bytes)


# the attributes each output type takes (buildx's others — compression, oci-mediatypes, annotation.*,
# tar=false, ... — are refused, never ignored: --compression and --annotation are the flags for those)
_OUTPUT_KEYS = {
    "registry": {"name", "push", "registry.insecure"},
    "image": {"name", "push", "registry.insecure"},
    "oci": {"dest", "name", "tar"},
    "docker": {"dest", "name"},
    "local": {"dest"},
    "tar": {"dest"},
}


def parse_output(text: str) -> dict[str, str]:
    """``type=oci,dest=out.tar`` -> {"type": "oci", "dest": "out.tar"}; a bare path means type=local,
    and ``-`` means ``type=tar,dest=-`` (the root filesystem as a tar on stdout), as in buildx."""
    fields: dict[str, str] = {}
    if text.strip() == "-":
        return {"type": "tar", "dest": "-"}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            if len(text.split(",")) == 1:
                return {"type": "local", "dest": text}
            raise ValueError(f"invalid --output {text!r}: expected key=value pairs")
        fields[key.strip()] = value.strip()
    kind = fields.get("type")
    if kind not in _OUTPUT_KEYS:
        raise ValueError(f"invalid --output {text!r}: type must be registry, oci, docker, tar or local")
    unknown = sorted(set(fields) - _OUTPUT_KEYS[kind] - {"type"})
    if unknown:
        raise ValueError(
            f"invalid --output {text!r}: type={kind} takes no {', '.join(unknown)} in lamina "
            f"(it takes {', '.join(sorted(_OUTPUT_KEYS[kind]))}; see --compression and --annotation)"
        )
    if kind == "oci" and fields.get("tar", "true").lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"invalid --output {text!r}: tar={fields['tar']} is not a boolean")
    if kind == "oci" and fields.get("tar", "").lower() in ("false", "0") and fields.get("dest") == "-":
        raise ValueError(f"invalid --output {text!r}: tar=false writes a directory; stdout takes the tarball")
    if kind in ("oci", "local", "tar") and not fields.get("dest"):
        raise ValueError(f"invalid --output {text!r}: type={kind} needs dest=PATH")
    push = fields.get("push", "true" if kind == "registry" else "false").lower()
    if kind in ("registry", "image") and push not in ("true", "1"):
        raise ValueError(f"invalid --output {text!r}: lamina has no image store to keep an image that is not pushed; "
                         "use type=registry (or push=true), type=oci or type=docker")
    if kind == "local" and fields["dest"] == "-":
        raise ValueError(f"invalid --output {text!r}: type=local writes a directory; use type=tar,dest=- for stdout")
    return fields


def insecure_output_registries(outputs: Sequence[Mapping[str, str]], tags: Sequence[str]) -> frozenset[str]:
    """Registries an output marks ``registry.insecure=true`` (BuildKit's attribute): pushed to over plain HTTP,
    as ``LAMINA_INSECURE_REGISTRIES`` lists them."""
    hosts: set[str] = set()
    for output in outputs:
        if output.get("registry.insecure", "").lower() in ("true", "1"):
            names = [n for n in output.get("name", "").split(";") if n] or list(tags)
            hosts.update(parse_reference(name).registry for name in names)
    return frozenset(hosts)


async def push_image(
    pool: ClientPool, refs: Sequence[str], image: ExportImage, images: ImageSource, known: BlobSources
) -> Digest:
    """Push the layers and the config (all concurrently), then the manifest under each ref; returns the
    manifest digest. The manifest goes last: a registry may refuse one whose blobs it does not hold."""
    config_digest = digest_of(image.config_bytes)
    for ref in refs:
        reference = parse_reference(ref)
        client = pool.get(reference.registry)
        repo = reference.repository
        await asyncio.gather(
            *(_push_layer(client, reference.registry, repo, layer, images, known) for layer in image.layers),
            client.push_blob(repo, config_digest, len(image.config_bytes), image.config_bytes, kind="config"),
        )
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
        await client.has_blob(repo, digest)  # the target has or can mount from a sibling repo
        or (mount_from and await client.mount_blob(repo, digest, mount_from))
    ):
        known.add_source(digest, f"{registry}/{repo}")
        return
    path = await images.fetch(layer)
    await client.push_blob(repo, digest, layer.descriptor.size, path, mount_from=mount_from)
    known.add_source(digest, f"{registry}/{repo}")


async def write_oci_tar(
    dest: Path,
    image: ExportImage,
    images: ImageSource,
    *,
    ref_name: str | None,
    descriptor_annotations: Mapping[str, str] | None = None,
) -> None:
    """An OCI image layout as one tar (what ``docker buildx --output type=oci`` writes), atomically.

    ``descriptor_annotations`` (``--annotation manifest-descriptor:``) go on the manifest's index.json entry.
    """
    paths = [await images.fetch(layer) for layer in image.layers]
    top = index_entry(mt.OCI_MANIFEST, image.digest, len(image.manifest_bytes), ref_name=ref_name,
                      annotations=descriptor_annotations)

    def fill(tar: LayoutTar) -> None:
        tar.add_bytes("oci-layout", oci_layout_json())
        tar.add_bytes("index.json", index_json([top]))
        tar.add_blob_bytes(image.digest, image.manifest_bytes)
        tar.add_blob_bytes(digest_of(image.config_bytes), image.config_bytes)
        for layer, path in zip(image.layers, paths, strict=True):
            tar.add_blob_file(layer.descriptor.digest, layer.descriptor.size, path)

    await write_layout_tar(dest, fill)


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

"""``--output type=docker,dest=FILE.tar``: the tarball ``docker load`` (and ``podman load``) reads.

What BuildKit's docker exporter writes (through containerd's archive exporter): an OCI image layout —
``oci-layout``, ``index.json`` and ``blobs/sha256/...`` holding the manifest, the config and the layer
blobs as they are (compressed) — plus Docker's ``manifest.json``, which ``docker load`` reads:
``[{"Config": "blobs/sha256/<config>", "RepoTags": [...], "Layers": ["blobs/sha256/<layer>", ...]}]``.
Every name (``-t`` or ``name=``) is one ``index.json`` entry annotated ``io.containerd.image.name`` (the
fully qualified name, ``docker.io/library/`` added as Docker normalises it) and
``org.opencontainers.image.ref.name`` (its tag), and one ``RepoTags`` item in Docker's short form.
Unlike BuildKit's default for this exporter (``oci-mediatypes=false``), the manifest keeps OCI media
types, so it is the very manifest (same digest) that ``--push`` and ``type=oci`` export; both loaders
accept it. The file is written beside ``dest`` and renamed into place.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.build.exporter import ExportImage
from lamina.build.images import ImageSource
from lamina.build.layouttar import LayoutTar, write_layout_tar
from lamina.build.rootfstar import STDOUT, copy_to_stdout
from lamina.oci import Descriptor, digest_of, parse_reference
from lamina.oci import mediatypes as mt
from lamina.oci.layout import REF_NAME_ANNOTATION, blob_path, index_json, oci_layout_json

if TYPE_CHECKING:
    pass

__all__ = ["IMAGE_NAME_ANNOTATION", "docker_names", "export_docker", "write_docker_tar"]

IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
_DEFAULT_REGISTRY = "docker.io"


def docker_names(ref: str) -> tuple[str, str | None]:
    """``ref`` as (fully qualified ``host/repo:tag``, Docker's short ``repo:tag`` for RepoTags or None).

    A reference without a tag (only a digest) names the image in ``index.json`` but has no RepoTag.
    """
    reference = parse_reference(ref)
    full = f"{reference.registry}/{reference.repository}"
    if reference.tag is None:
        return (f"{full}@{reference.digest}" if reference.digest else f"{full}:latest"), None
    short_repo = full
    if reference.registry == _DEFAULT_REGISTRY:
        short_repo = reference.repository.removeprefix("library/")
    return f"{full}:{reference.tag}", f"{short_repo}:{reference.tag}"


def _manifest_entries(
    image: ExportImage, names: Sequence[str], descriptor_annotations: Mapping[str, str]
) -> tuple[list[Descriptor], list[str]]:
    entries: list[Descriptor] = []
    repo_tags: list[str] = []
    for name in names or [""]:
        annotations = dict(descriptor_annotations)
        if name:
            full, short = docker_names(name)
            annotations[IMAGE_NAME_ANNOTATION] = full
            tag = parse_reference(name).tag
            if tag:
                annotations[REF_NAME_ANNOTATION] = tag
            if short and short not in repo_tags:
                repo_tags.append(short)
        entries.append(Descriptor(mt.OCI_MANIFEST, image.digest, len(image.manifest_bytes),
                                  annotations=annotations or None))
    return entries, repo_tags


async def write_docker_tar(
    dest: Path,
    image: ExportImage,
    images: ImageSource,
    *,
    names: Sequence[str],
    descriptor_annotations: Mapping[str, str] | None = None,
) -> None:
    """Write the docker-archive tarball of ``image`` to ``dest`` atomically (layers fetched if lazy)."""
    paths = [await images.fetch(layer) for layer in image.layers]
    entries, repo_tags = _manifest_entries(image, names, descriptor_annotations or {})
    config_digest = digest_of(image.config_bytes)
    docker_manifest = [{
        "Config": blob_path(config_digest),
        "RepoTags": repo_tags or None,
        "Layers": [blob_path(layer.descriptor.digest) for layer in image.layers],
    }]

    def fill(tar: LayoutTar) -> None:
        tar.add_directory("blobs")
        tar.add_directory("blobs/sha256")
        tar.add_blob_bytes(image.digest, image.manifest_bytes)
        tar.add_blob_bytes(config_digest, image.config_bytes)
        for layer, path in zip(image.layers, paths, strict=True):
            tar.add_blob_file(layer.descriptor.digest, layer.descriptor.size, path)
        tar.add_bytes("oci-layout", oci_layout_json())
        tar.add_bytes("index.json", index_json(entries))
        tar.add_bytes("manifest.json", json.dumps(docker_manifest, separators=(",", ":")).encode())

    await write_layout_tar(dest, fill)


async def export_docker(
    output: Mapping[str, str],
    image: ExportImage,
    images: ImageSource,
    names: Sequence[str],
    descriptor_annotations: Mapping[str, str],
    tmp_dir: Path,
) -> None:
    """``type=docker,dest=FILE``: the tarball (``dest=-``: on stdout); without ``dest`` (``--load``): the tarball
    piped to ``docker load``, as buildx does with a docker-container builder. Any ``docker`` CLI in PATH that
    loads a docker archive works (Docker's, or podman-docker's); without one, the error says how to get the
    image instead."""
    dest = output.get("dest")
    if dest and dest != STDOUT:
        await write_docker_tar(Path(dest), image, images, names=names, descriptor_annotations=descriptor_annotations)
        return
    if dest == STDOUT:  # buildx's `-o type=docker,dest=- | docker load`
        path = tmp_dir / f"docker-{image.digest.encoded}.tar"
        try:
            await write_docker_tar(path, image, images, names=names, descriptor_annotations=descriptor_annotations)
            await copy_to_stdout(path)
        finally:
            path.unlink(missing_ok=True)
        return
    docker = shutil.which("docker")
    if docker is None:
        raise ValueError(
            "--load / --output type=docker: no `docker` command in PATH to load the image into; "
            "write the archive with --output type=docker,dest=FILE.tar and load it where Docker or podman runs"
        )
    fd, tmp = tempfile.mkstemp(prefix="load-", suffix=".tar", dir=tmp_dir)
    os.close(fd)
    try:
        await write_docker_tar(Path(tmp), image, images, names=names, descriptor_annotations=descriptor_annotations)
        proc = await asyncio.create_subprocess_exec(
            docker, "load", "-i", tmp, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            raise ValueError(f"--load: `docker load` failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    finally:
        Path(tmp).unlink(missing_ok=True)

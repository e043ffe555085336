"""Shared by the RUN --mount build tests: a context, a ``lamina build`` in process, the layers of its OCI output."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path


def cached_steps(err: str) -> dict[str, bool]:
    """Each step as written (FROM aside) -> whether it was CACHED, from plain progress output."""
    names: dict[str, str] = {}
    out: dict[str, bool] = {}
    for line in err.splitlines():
        match = re.match(r"^(#\d+) (\[.*?\] )?(.*)$", line)
        if not match:
            continue
        vertex, stage, rest = match.groups()
        if stage and not rest.startswith("FROM "):
            names[vertex] = rest
            out.setdefault(rest, False)
        elif vertex in names and rest.startswith("CACHED"):
            out[names[vertex]] = True
    return out


def oci_blobs(oci_tar: Path) -> dict[str, bytes]:
    """Every blob of an OCI archive (``--output type=oci``), decompressed when gzip."""
    blobs = {}
    with tarfile.open(oci_tar) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                blobs[member.name] = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return blobs


def layer_names(oci_tar: Path) -> list[list[str]]:
    """The entry names of each layer of the image in an OCI archive, bottom first."""
    blobs = oci_blobs(oci_tar)
    index = json.loads(blobs_index(oci_tar))
    manifest = json.loads(blobs["blobs/" + index["manifests"][0]["digest"].replace(":", "/")])
    out = []
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(blobs["blobs/" + layer["digest"].replace(":", "/")])) as tar:
            out.append(tar.getnames())
    return out


def blobs_index(oci_tar: Path) -> bytes:
    with tarfile.open(oci_tar) as tar:
        return tar.extractfile("index.json").read()  # type: ignore[union-attr]

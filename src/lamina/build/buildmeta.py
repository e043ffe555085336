"""``--iidfile`` and ``--metadata-file``: what buildx writes after a build, for CI scripts to read.

``--iidfile``: buildx writes the exporter's ``containerimage.config.digest`` when there is one (one
platform: the image ID, as ``docker images`` shows it) and ``containerimage.digest`` otherwise (an
index), with no newline; a stale file is removed before the build starts, so a failed build leaves none.
Only ``local``/``tar`` outputs have no image: buildx refuses the flag there, and so does lamina.

``--metadata-file``: a JSON object (2-space indent, as buildx marshals it) with BuildKit's image
exporter keys: ``containerimage.digest`` (manifest or index digest), ``containerimage.config.digest``
(single platform), ``containerimage.descriptor`` (mediaType, digest, size, the ``manifest-descriptor``
annotations plus ``org.opencontainers.image.created``, and the platform of a single-platform image) and
``image.name`` (the names, comma-separated) when the image has any. buildx's ``buildx.build.ref``
(``builder/node/ref`` of a BuildKit daemon's build record) has no counterpart: lamina has no builder
instance or build history to point into, so the key is left out. Written atomically (temp + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.oci import Platform, digest_of

if TYPE_CHECKING:
    from lamina.build.builder import BuildRequest, BuildResult

__all__ = [
    "check_iidfile",
    "image_metadata",
    "image_names",
    "remove_stale",
    "with_load",
    "write_atomic",
    "write_build_metadata",
    "write_iidfile",
    "write_metadata_file",
]

CREATED_ANNOTATION = "org.opencontainers.image.created"


def remove_stale(path: Path | None) -> None:
    """buildx removes an old ``--iidfile`` before building: a failed build must not leave a stale ID."""
    if path is None:
        return
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OSError(f"--iidfile {path}: cannot remove the old file: {exc.strerror or exc}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, then rename it over ``path`` (mode 0644)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OSError(f"{path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def image_metadata(
    *,
    manifest: bytes,
    names: Sequence[str],
    descriptor_annotations: Mapping[str, str],
    platform: Platform | None,
    source_date_epoch: int | None,
) -> dict[str, Any]:
    """buildx's metadata keys for the exported image (``manifest`` is the image manifest or index)."""
    doc = json.loads(manifest)
    media_type = doc.get("mediaType", "")
    annotations = dict(descriptor_annotations)
    created = source_date_epoch if source_date_epoch is not None else int(time.time())
    annotations.setdefault(CREATED_ANNOTATION, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)))
    descriptor: dict[str, Any] = {
        "mediaType": media_type,
        "digest": str(digest_of(manifest)),
        "size": len(manifest),
        "annotations": annotations,
    }
    out: dict[str, Any] = {}
    config = doc.get("config")
    if isinstance(config, dict) and "manifests" not in doc:  # one image: its config digest is the image ID
        out["containerimage.config.digest"] = config["digest"]
        if platform is not None:
            descriptor["platform"] = platform.dump()
    out["containerimage.descriptor"] = descriptor
    out["containerimage.digest"] = descriptor["digest"]
    if names:
        out["image.name"] = ",".join(names)
    return out


def write_iidfile(path: Path, metadata: Mapping[str, Any]) -> None:
    """The config digest of a single-platform image, else the index digest; no trailing newline."""
    value = metadata.get("containerimage.config.digest") or metadata["containerimage.digest"]
    write_atomic(path, str(value).encode())


def write_metadata_file(path: Path, metadata: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(dict(metadata), indent=2).encode())


def with_load(outputs: Sequence[dict[str, str]], load: bool) -> tuple[dict[str, str], ...]:
    """``--load`` is buildx's shorthand for ``--output type=docker`` (no dest: into ``docker load``)."""
    if load and not any(o["type"] == "docker" and not o.get("dest") for o in outputs):
        return (*outputs, {"type": "docker"})
    return tuple(outputs)


def check_iidfile(iidfile: Path | None, outputs: Sequence[Mapping[str, str]], *, push: bool = False) -> None:
    """buildx refuses ``--iidfile`` when every output is a filesystem (``local``/``tar``) and nothing is
    pushed: there is no image."""
    if iidfile is not None and not push and outputs and all(o["type"] in ("local", "tar") for o in outputs):
        raise ValueError(f"--iidfile {iidfile}: local and tar exporters are incompatible with image ID file "
                         "(add --push or an image output such as --output type=oci,dest=FILE.tar)")


def image_names(tags: Sequence[str], outputs: Sequence[Mapping[str, str]]) -> list[str]:
    """The names the image is exported under: every ``-t``, then ``name=`` of image outputs (BuildKit's
    ``image.name``)."""
    names = list(tags)
    for output in outputs:
        for name in output.get("name", "").replace(";", ",").split(","):
            if name and name not in names:
                names.append(name)
    return names


def write_build_metadata(
    request: BuildRequest, result: BuildResult, *, iidfile: Path | None, metadata_file: Path | None
) -> None:
    """After a successful build: the ``--iidfile`` and ``--metadata-file`` buildx would write."""
    if iidfile is None and metadata_file is None:
        return
    has_image = not request.outputs or any(o["type"] not in ("local", "tar") for o in request.outputs)
    metadata: dict[str, Any] = {}
    if has_image or request.push:
        several = len(request.platforms) > 1  # the result is an index: its descriptor, no platform
        metadata = image_metadata(
            manifest=result.manifest,
            names=image_names(request.tags, request.outputs),
            descriptor_annotations=request.annotations.index_descriptor() if several
            else request.annotations.manifest_descriptor(request.platform),
            platform=None if several else request.platform,
            source_date_epoch=request.source_date_epoch,
        )
    if iidfile is not None:
        write_iidfile(iidfile, metadata)
    if metadata_file is not None:
        write_metadata_file(metadata_file, metadata)

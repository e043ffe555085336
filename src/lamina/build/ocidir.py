"""``--output type=oci,dest=DIR,tar=false``: the OCI image layout as a directory instead of a tarball.

BuildKit's oci exporter with ``tar=false`` hands the layout to the client as files: ``oci-layout``,
``blobs/sha256/<hex>`` (the manifest, the config, the layers as they are) and ``index.json`` naming the
manifest (with ``org.opencontainers.image.ref.name`` when the image has a tag). Blobs already in the
directory are kept (content-addressed, so equal), every new one is written to a temp file and renamed,
and ``index.json`` is replaced last, so a reader never sees an index naming a blob not yet there. The
directory can then be read by ``skopeo copy oci:DIR:TAG`` or used as ``--build-context
NAME=oci-layout://DIR:TAG``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from lamina.build.exporter import ExportImage
from lamina.build.images import ImageSource
from lamina.oci import digest_of
from lamina.oci import mediatypes as mt
from lamina.oci.layout import blob_path, index_entry, index_json, oci_layout_json

__all__ = ["check_oci_dir_outputs", "is_oci_dir", "write_oci_dir"]


def _put(path: Path, data: bytes | None = None, source: Path | None = None) -> None:
    """Write ``path`` whole by rename (from ``data`` or a copy of ``source``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                with open(source, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
            else:
                out.write(data or b"")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def write_oci_dir(
    dest: Path,
    image: ExportImage,
    images: ImageSource,
    *,
    ref_name: str | None,
    descriptor_annotations: Mapping[str, str] | None = None,
) -> None:
    """Write ``image`` as an OCI image layout directory at ``dest`` (layers fetched if lazy)."""
    paths = [await images.fetch(layer) for layer in image.layers]
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"--output type=oci,dest={dest},tar=false: {dest} exists and is not a directory")
    top = index_entry(mt.OCI_MANIFEST, image.digest, len(image.manifest_bytes), ref_name=ref_name,
                      annotations=descriptor_annotations)

    def write() -> None:
        for layer, path in zip(image.layers, paths, strict=True):
            target = dest / blob_path(layer.descriptor.digest)
            if not target.is_file():
                _put(target, source=path)
        for data in (image.config_bytes, image.manifest_bytes):
            target = dest / blob_path(digest_of(data))
            if not target.is_file():
                _put(target, data)
        _put(dest / "oci-layout", oci_layout_json())
        _put(dest / "index.json", index_json([top]))

    await asyncio.to_thread(write)


def is_oci_dir(output: Mapping[str, str]) -> bool:
    """``type=oci`` with ``tar=false``: a layout directory (validated by parse_output)."""
    return output["type"] == "oci" and output.get("tar", "true").lower() in ("false", "0")


def check_oci_dir_outputs(outputs: Sequence[Mapping[str, str]], platform_count: int) -> None:
    """Before any work: ``tar=false`` writes one image's layout (several platforms: use the tarball)."""
    if platform_count > 1 and any(is_oci_dir(o) for o in outputs):
        raise ValueError("--output type=oci,tar=false writes one image's layout: build one --platform, or drop "
                         "tar=false (the tarball holds the index of every platform)")

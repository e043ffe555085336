"""OCI image layouts written as one tar file, atomically: what ``--output type=oci`` and ``type=docker`` write.

One writer for the three exporters that produce such a tar (one image, a multi-platform index, a docker
archive, which is an OCI layout plus docker's ``manifest.json``): PAX entries, every file read-only
(0444), each blob stored once under ``blobs/sha256/`` however many images list it. The tar is written
beside its destination, fsynced and renamed over it, so a crash or a failed fetch leaves the old file
or the new one, never half a tar. ``tarfile`` is imported here only: a pushed build never loads it.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.oci import Digest
from lamina.oci.layout import blob_path

if TYPE_CHECKING:
    import tarfile

__all__ = ["LayoutTar", "write_layout_tar"]


class LayoutTar:
    """The entries of one layout tar being written; blobs added twice are written once."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._blobs: set[Digest] = set()

    def add_directory(self, name: str) -> None:
        info = self._tar.tarinfo(name)
        info.type = b"5"  # tarfile.DIRTYPE
        info.mode = 0o755
        self._tar.addfile(info)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = self._tar.tarinfo(name)
        info.size = len(data)
        info.mode = 0o444
        self._tar.addfile(info, io.BytesIO(data))

    def add_blob_bytes(self, digest: Digest, data: bytes) -> None:
        if digest not in self._blobs:
            self._blobs.add(digest)
            self.add_bytes(blob_path(digest), data)

    def add_blob_file(self, digest: Digest, size: int, path: Path) -> None:
        """A blob from the content store; ``size`` is its descriptor's (the entry is cut to it)."""
        if digest in self._blobs:
            return
        self._blobs.add(digest)
        info = self._tar.tarinfo(blob_path(digest))
        info.size = size
        info.mode = 0o444
        with open(path, "rb") as fh:
            self._tar.addfile(info, fh)


async def write_layout_tar(dest: Path, fill: Callable[[LayoutTar], None]) -> None:
    """Write ``dest`` atomically with the entries ``fill`` adds (called in a worker thread)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)

    def write() -> None:
        import tarfile

        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            fill(LayoutTar(tar))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)

    try:
        await asyncio.to_thread(write)
    finally:
        Path(tmp).unlink(missing_ok=True)

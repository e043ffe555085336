"""``--output type=tar,dest=FILE`` and ``-o -``: the final root filesystem as one tar stream (BuildKit's tar
exporter), to a file or to stdout; and the other tarball outputs (``type=oci|docker,dest=-``) to stdout.

The stream holds the merged root filesystem of the image (not its layers): every file, directory, symlink
and hardlink with its numeric owner, mode and mtime, names relative to the root (``bin/busybox``), sorted,
in GNU tar's format as ``tar --numeric-owner`` writes it. ``dest=-`` (and buildx's ``-o -``) streams it to
stdout, which then carries nothing else: the image digest ``lamina build`` prints is left out. A file
``dest`` is written beside itself and renamed into place.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["STDOUT", "check_stream_outputs", "copy_to_stdout", "write_rootfs_tar"]

STDOUT = "-"


def _tar_command(root: str) -> list[str]:
    """GNU tar over the root's entries by name (``bin/...``, no ``./`` prefix, as BuildKit's tar exporter)."""
    tar = shutil.which("tar")
    if tar is None:
        raise OSError("--output type=tar needs GNU tar (Debian package tar)")
    names = sorted(os.listdir(root))
    members = ["--", *names] if names else ["--files-from", os.devnull]  # an empty root: an empty archive
    return [tar, "--numeric-owner", "--sort=name", "--xattrs", "-C", root, "-cf", "-", *members]


async def write_rootfs_tar(dest: str, lowers_top_first: Sequence[Path], view: Callable[..., Any]) -> None:
    """Tar the merged view of the layers into ``dest`` (a path, or ``-`` for stdout)."""

    def write() -> None:
        with view(list(lowers_top_first)) as root:
            if dest == STDOUT:
                sys.stdout.flush()
                result = subprocess.run(_tar_command(str(root)), stdout=sys.stdout.buffer, stderr=subprocess.PIPE,
                                        check=False)
                sys.stdout.buffer.flush()
            else:
                path = Path(dest)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
                try:
                    with os.fdopen(fd, "wb") as out:
                        result = subprocess.run(_tar_command(str(root)), stdout=out, stderr=subprocess.PIPE,
                                                check=False)
                    if result.returncode == 0:
                        os.chmod(tmp, 0o644)
                        os.replace(tmp, path)
                finally:
                    Path(tmp).unlink(missing_ok=True)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise OSError(f"--output type=tar,dest={dest}: tar failed: {detail}")

    await asyncio.to_thread(write)


async def copy_to_stdout(path: Path) -> None:
    """Stream a finished tarball (``type=oci|docker,dest=-``) to stdout, as buildx does for ``dest=-``."""

    def copy() -> None:
        sys.stdout.flush()
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()

    await asyncio.to_thread(copy)


def check_stream_outputs(outputs: Sequence[Mapping[str, str]], platform_count: int) -> None:
    """Before any work: at most one output on stdout, and type=tar for one platform only."""
    streamed = [o["type"] for o in outputs if o.get("dest") == STDOUT]
    if len(streamed) > 1:
        raise ValueError(f"--output: only one output can go to stdout (dest=-), got {', '.join(streamed)}")
    if platform_count > 1 and any(o["type"] == "tar" for o in outputs):
        raise ValueError("--output type=tar holds one root filesystem: build one --platform, or use type=local "
                         "(one directory per platform)")

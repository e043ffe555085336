"""COPY/ADD: copying from a build context or another root filesystem into a mounted rootfs.

The solver calls :func:`copy_checksum` for a COPY/ADD step's cache key and :func:`apply_copy` to perform
it (both share ADD URL downloads through one :class:`Downloads` per build). Semantics are BuildKit's;
see :mod:`lamina.build.filecopy.copier`. Writes never leave the rootfs (:mod:`.rootfs`).
"""

from typing import Any

from lamina.build.filecopy.checksum import copy_checksum
from lamina.build.filecopy.copier import OwnerResolver, apply_copy, parse_chmod
from lamina.build.filecopy.fetch import Download, Downloads, is_url
from lamina.build.filecopy.rootfs import CopyError, RootFS

__all__ = [
    "CopyError",
    "Download",
    "Downloads",
    "OwnerResolver",
    "RootFS",
    "apply_copy",
    "copy_checksum",
    "extract_archive",
    "is_archive",
    "is_url",
    "parse_chmod",
]


def __getattr__(name: str) -> Any:
    """``extract_archive``/``is_archive`` load tarfile and every codec: imported when first asked for."""
    if name in ("extract_archive", "is_archive"):
        from lamina.build.filecopy import archive

        return getattr(archive, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

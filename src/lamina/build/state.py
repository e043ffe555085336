"""The builder's state directory: where the content store, cache index, unpacked layers and scratch live.

::

    <root>/content/          ContentStore (blobs/sha256/<hex>, ingest/)
    <root>/cache.db          LocalCache index (SQLite, WAL)
    <root>/layers/           LayerStore: each layer unpacked once, by diffID
    <root>/snapshots/        per-step overlay upper/work dirs and mount points (removed after use)
    <root>/tmp/              layer tarballs being written, context scratch

``--root`` picks it; the default is the per-user data dir (``platformdirs.user_data_dir("lamina")``).
Everything under it is either complete and published atomically or private to one build.

The root is mode 0700: unpacked layers keep their setuid binaries and their files' modes, so the
directory that leads to them must be closed to other local users (containerd's root is 0711 and its
snapshots 0700, Docker's data root 0710). A root left 0755 by an older lamina is tightened on open.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lamina.build.cache.local import LocalCache
from lamina.build.contentstore import ContentStore

__all__ = ["BuildState", "StateDirError", "default_root"]


class StateDirError(Exception):
    """The state directory cannot be created or made private."""


def default_root() -> Path:
    import platformdirs  # here: a build given --root (CI's usual case) never needs it (~3 ms of imports)

    return Path(platformdirs.user_data_dir("lamina"))


def _private_root(root: Path) -> None:
    """Create ``root`` mode 0700, or tighten an existing one that others can enter or read."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(root.stat().st_mode) != 0o700:
            os.chmod(root, 0o700)
    except OSError as exc:
        raise StateDirError(
            f"state directory {root} cannot be made private (mode 0700): {exc.strerror or exc}; "
            "pass --root with a directory you own"
        ) from None


@dataclass
class BuildState:
    """An open state directory: its root, content store and local cache index (see the module docstring)."""

    root: Path
    content: ContentStore
    cache: LocalCache

    @classmethod
    def open(cls, root: Path | None = None) -> BuildState:
        root = Path(root) if root is not None else default_root()
        _private_root(root)
        for sub in ("layers", "snapshots", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        content = ContentStore(root / "content")
        content.sweep_ingest()
        return cls(root, content, LocalCache(root / "cache.db", content))

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def close(self) -> None:
        self.cache.close()

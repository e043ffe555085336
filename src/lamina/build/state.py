"""The builder's state directory: where the content store, cache index, unpacked layers and scratch live.

::

    <root>/content/          ContentStore (blobs/sha256/<hex>, ingest/)
    <root>/cache.db          LocalCache index (SQLite, WAL)
    <root>/layers/           LayerStore: each layer unpacked once, by diffID
    <root>/snapshots/        per-step overlay upper/work dirs and mount points (removed after use)
    <root>/tmp/              layer tarballs being written, context scratch

``--root`` picks it; the default is the per-user data dir (``platformdirs.user_data_dir("lamina")``).
Everything under it is either complete and published atomically or private to one build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from lamina.build.cache.local import LocalCache
from lamina.build.contentstore import ContentStore

__all__ = ["BuildState", "default_root"]


def default_root() -> Path:
    return Path(platformdirs.user_data_dir("lamina"))


@dataclass
class BuildState:
    root: Path
    content: ContentStore
    cache: LocalCache

    @classmethod
    def open(cls, root: Path | None = None) -> BuildState:
        root = Path(root) if root is not None else default_root()
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

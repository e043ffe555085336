"""Helpers for context/COPY tests: build small trees from a dict spec."""

from __future__ import annotations

import os
from pathlib import Path


def make_tree(root: Path, spec: dict[str, str | bytes | None]) -> Path:
    """Create files (str/bytes content), dirs (key ending in '/', value None) and symlinks ("-> target")."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, value in spec.items():
        path = root / rel.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        elif isinstance(value, str) and value.startswith("-> "):
            os.symlink(value[3:], path)
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value or "")
    return root


def listing(root: Path) -> dict[str, str]:
    """{relative path: 'd' | 'f:<content>' | 'l:<target>'} of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "l:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "d"
            else:
                out[rel] = "f:" + path.read_text()
    return out

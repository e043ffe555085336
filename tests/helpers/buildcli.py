"""``lamina build`` run in this process, as the build tests call it: a context directory and the build."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.cli import main

__all__ = ["build", "make_context"]


def make_context(path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """``path`` with this Dockerfile and these files (parent directories made), returned."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def build(capsys: pytest.CaptureFixture[str], context: Path, root: Path, *args: str) -> tuple[int, str, str]:
    """``lamina build --progress plain --root ROOT ARGS CONTEXT``: (exit code, stdout stripped, stderr)."""
    rc = main(["build", "--progress", "plain", "--root", str(root), *args, str(context)])
    out, err = capsys.readouterr()
    return rc, out.strip(), err

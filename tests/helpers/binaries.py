"""Skip, with the reason, a test whose external binary is missing (CI installs them all, so none skip there)."""

from __future__ import annotations

import shutil

import pytest

__all__ = ["require_binary"]


def require_binary(binary: str, package: str) -> str:
    """Return the path of ``binary``; skip the calling test naming the Debian package if it is missing."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (Debian package {package}; scripts/install-system-deps.sh installs it)")
    return path

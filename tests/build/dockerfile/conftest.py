"""Fixtures for the Dockerfile frontend tests (helpers live in dfsupport)."""

from dfsupport import build

__all__ = ["build"]

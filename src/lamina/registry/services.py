"""Typed application keys for the services every handler shares."""

from __future__ import annotations

from aiohttp import web

from lamina.store import Storage

from .config import RegistryConfig

__all__ = ["CONFIG", "STORAGE"]

CONFIG = web.AppKey("config", RegistryConfig)
STORAGE = web.AppKey("storage", Storage)

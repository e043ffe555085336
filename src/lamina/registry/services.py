"""Typed application keys for the services every handler shares (the offloader itself lives in
:mod:`lamina.registry.background`)."""

from __future__ import annotations

from aiohttp import web

from lamina.store import Storage

from .background import Offloader
from .config import RegistryConfig

__all__ = ["CONFIG", "OFFLOAD", "STORAGE", "Offloader"]

CONFIG = web.AppKey("config", RegistryConfig)
STORAGE = web.AppKey("storage", Storage)
OFFLOAD = web.AppKey("offload", Offloader)

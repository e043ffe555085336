"""lamina's OCI distribution-spec 1.1 registry (``lamina registry serve``), strict like Amazon ECR.

The public API is small: build the aiohttp application from settings, or load the settings the way
the CLI does. Everything else (routes, validation, the janitor) is internal. Names are imported
lazily so ``lamina registry --help`` and settings errors do not pay for aiohttp and SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ConfigError", "ErrorCode", "RegistryConfig", "RegistryError", "create_app", "load_config"]

_HOME = {
    "create_app": ".app",
    "ConfigError": ".config",
    "RegistryConfig": ".config",
    "load_config": ".config",
    "ErrorCode": ".errors",
    "RegistryError": ".errors",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'lamina.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)

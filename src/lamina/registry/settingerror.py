"""The one error type of registry settings, in a module of its own.

Every parser of a settings section (``gc``, ``lifecycle``, ``immutable_tags``, ``auth``, ...) raises it, and
:mod:`lamina.registry.config` loads the file and calls those parsers; keeping the error here lets the
parsers stay below the loader (they never import it), so the loader imports them at the top.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad setting; the message names the key and the value."""

"""Operations settings and their wiring into the app: auth, immutable tags, GC, lifecycle, metrics, console.

Kept apart from the core settings so the core's ``RegistryConfig`` grows by one field (``ops``) and
``create_app`` by one call (:func:`install`). Keys (top level of the config file): ``auth``,
``immutable_tags``, ``gc``, ``lifecycle``, ``access_log``, ``metrics``, ``console``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .gc import GcSettings, parse_gc
from .immutability import ImmutableTagRule, parse_immutable_tags
from .lifecycle import LifecycleSettings, parse_lifecycle
from .settingerror import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from .auth.config import AuthConfig
    from .config import RegistryConfig

__all__ = ["OPS_KEYS", "OpsSettings", "configure_access_log", "exposure_warning", "install", "parse_ops_setting"]

OPS_KEYS = ("auth", "immutable_tags", "gc", "lifecycle", "access_log", "metrics", "console")


@dataclass(frozen=True, slots=True)
class OpsSettings:
    auth: AuthConfig | None = None
    immutable_tags: tuple[ImmutableTagRule, ...] = ()
    gc: GcSettings = field(default_factory=GcSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    access_log: bool = False
    metrics: bool = True
    console: bool = True


def parse_ops_setting(ops: OpsSettings, key: str, value: Any) -> OpsSettings:
    """``ops`` with one file setting applied; ConfigError naming the key."""
    if key == "auth":
        from .auth.config import parse_auth

        return dataclasses.replace(ops, auth=parse_auth(value))
    if key == "immutable_tags":
        return dataclasses.replace(ops, immutable_tags=parse_immutable_tags(value))
    if key == "gc":
        return dataclasses.replace(ops, gc=parse_gc(value))
    if key == "lifecycle":
        return dataclasses.replace(ops, lifecycle=parse_lifecycle(value))
    if key in ("access_log", "metrics", "console"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return dataclasses.replace(ops, **{key: value})
    raise ConfigError(f"unknown setting {key!r}")


def configure_access_log() -> None:
    """Access-log lines are bare JSON objects on stderr (one per line), whatever the log level."""
    import logging
    import sys

    logger = logging.getLogger("lamina.registry.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def exposure_warning(host: str, ops: OpsSettings) -> str | None:
    """The loud start-up warning for a registry reachable beyond loopback without authentication."""
    from lamina.client.session import is_loopback

    if ops.auth is not None or is_loopback(host):
        return None
    return (
        f"WARNING: listening on {host}, which is not a loopback address, WITHOUT AUTHENTICATION: anyone who "
        "can reach this port can push, overwrite and delete images. Add an [auth] section (docs/registry.md)."
    )


def install(app: web.Application, config: RegistryConfig, ops: OpsSettings) -> None:
    """Add the ops middlewares, routes and background jobs to a not-yet-started app."""
    from .auth import AUTH, AuthService
    from .auth.middleware import auth_middleware, token_endpoint
    from .metrics import METRICS, Metrics, healthz, metrics_handler, response_hook, timing_middleware
    from .metricsdir import metrics_directory
    from .services import OFFLOAD, STORAGE

    app[METRICS] = Metrics(metrics_directory(config.root))
    app.middlewares.insert(0, timing_middleware)
    app.on_response_prepare.append(response_hook(ops.access_log))
    if ops.auth is not None:
        app[AUTH] = AuthService(ops.auth, config.root.absolute(), failures=lambda: app[STORAGE].metadata)
        app.middlewares.append(auth_middleware)
        app.router.add_get("/token", token_endpoint, allow_head=False)
        app.router.add_post("/token", token_endpoint)
    app.router.add_get("/healthz", healthz)
    if ops.metrics:
        app.router.add_get("/metrics", metrics_handler, allow_head=False)
    if ops.console:
        from .console import add_console_routes

        add_console_routes(app)
    if config.run_janitor and (ops.gc.interval_seconds > 0 or ops.lifecycle.interval_seconds > 0):

        async def background(app: web.Application) -> AsyncIterator[None]:
            from .gc import gc_forever
            from .lifecycle import lifecycle_forever

            gc_done, lifecycle_done = app[METRICS].count_gc, app[METRICS].count_lifecycle
            stop = asyncio.Event()
            storage, offload = app[STORAGE], app[OFFLOAD]
            tasks = []
            if ops.gc.interval_seconds > 0:
                tasks.append(asyncio.create_task(gc_forever(storage, ops.gc, offload, stop, gc_done)))
            if ops.lifecycle.interval_seconds > 0 and ops.lifecycle.rules:
                job = lifecycle_forever(storage, ops.lifecycle, offload, stop, lifecycle_done)
                tasks.append(asyncio.create_task(job))
            yield
            stop.set()  # a running pass finishes (the storage closes after this context)
            for task in tasks:
                await task

        app.cleanup_ctx.append(background)

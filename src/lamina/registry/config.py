"""Registry settings: one frozen dataclass, loaded from a TOML or YAML file, CLI options on top.

Every key is checked here, once, so a typo in a config file is one clear error line naming the key
instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .limits import LimitsError, LimitSettings, parse_limits
from .settingerror import ConfigError

if TYPE_CHECKING:
    from .ops import OpsSettings

__all__ = ["ConfigError", "RegistryConfig", "load_config", "parse_listen"]


def _default_ops() -> OpsSettings:
    # Imported on use, not to dodge a cycle (ops never imports this module: an import-linter contract),
    # but because the sections' parsers live beside their jobs (gc, lifecycle: the storage and web layers,
    # ~0.6 s of imports) that the CLI's start and --help never need.
    from .ops import OpsSettings

    return OpsSettings()

MiB = 1 << 20
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_LEGACY_POLICIES = ("accept", "reject")
_VERIFY_MODES = ("off", "first", "always")  # lamina.registry.verify


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    root: Path = Path("lamina-data")
    workers: int = 1
    max_manifest_bytes: int = 4 * MiB
    legacy_buildkit_cache: str = "accept"  # "accept" | "reject"
    allow_empty_layers: bool = False
    max_json_depth: int = 64  # deepest JSON nesting a manifest body may have (MANIFEST_INVALID beyond)
    max_header_bytes: int = 8192  # longest request line or header line (431/414 beyond)
    automatic_crossmount: bool = True  # POST ?mount= without from= may link the blob from any repository
    upload_expiry_seconds: float = 3600.0  # an upload session idle this long is abandoned (janitor)
    limits: LimitSettings = field(default_factory=LimitSettings)  # [limits]: lamina.registry.limits
    sqlite_synchronous: str = "FULL"
    verify_on_read: str = "first"  # "off" | "first" | "always": re-hash a blob before a GET sends it
    run_janitor: bool = True  # expire abandoned uploads in this process (one worker only)
    blobs: str | None = None  # None: under root; "s3://BUCKET/PREFIX?endpoint=..&region=.." (store.s3client)
    metadata: str | None = None  # None: ROOT/metadata.db (SQLite); "postgresql://USER@HOST:PORT/DB" (store.postgres)
    tls_cert: Path | None = None  # HTTPS: PEM chain (leaf first) and its key, reloaded when they change
    tls_key: Path | None = None
    tls_reload_seconds: float = 10.0
    # auth, immutable tags, gc, lifecycle, access log, metrics, console (lamina.registry.ops)
    ops: OpsSettings = field(default_factory=_default_ops)

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6) or ``:PORT`` for loopback."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"listen: invalid address {value!r}: expected HOST:PORT, e.g. 127.0.0.1:5000")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check(key: str, value: Any) -> Any:
    """Validate one file/CLI setting and convert it to the dataclass field's type."""
    if key == "listen":
        if not isinstance(value, str):
            raise ConfigError(f"listen: expected a string HOST:PORT, got {value!r}")
        return parse_listen(value)
    if key == "root":
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(f"root: expected a directory path, got {value!r}")
        return Path(value)
    if key == "workers":
        return _int(key, value, 1)
    if key == "max_manifest_bytes":
        return _int(key, value, 1024)
    if key == "legacy_buildkit_cache":
        if value not in _LEGACY_POLICIES:
            raise ConfigError(f"legacy_buildkit_cache: expected 'accept' or 'reject', got {value!r}")
        return value
    if key == "max_json_depth":
        return _int(key, value, 8)
    if key == "max_header_bytes":
        return _int(key, value, 1024)
    if key in ("allow_empty_layers", "automatic_crossmount"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if key == "limits":
        try:
            return parse_limits(value)
        except LimitsError as exc:
            raise ConfigError(str(exc)) from None
    if key == "upload_expiry_seconds":
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"upload_expiry_seconds: expected a positive number, got {value!r}")
        return float(value)
    if key == "verify_on_read":
        if value not in _VERIFY_MODES:
            raise ConfigError(f"verify_on_read: expected one of {', '.join(_VERIFY_MODES)}, got {value!r}")
        return value
    if key == "sqlite_synchronous":
        if not isinstance(value, str) or value.upper() not in _SYNCHRONOUS:
            raise ConfigError(f"sqlite_synchronous: expected one of {', '.join(_SYNCHRONOUS)}, got {value!r}")
        return value.upper()
    if key in ("tls_cert", "tls_key"):
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(f"{key}: expected a PEM file path, got {value!r}")
        return Path(value)
    if key == "metadata":
        from lamina.store.postgres import check_url

        if not isinstance(value, str):
            raise ConfigError(f"metadata: expected a string postgresql://USER@HOST:PORT/DB, got {value!r}")
        try:
            return check_url(value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if key == "blobs":
        if not isinstance(value, str):
            raise ConfigError(f"blobs: expected a string s3://BUCKET/PREFIX?endpoint=URL&region=REGION, got {value!r}")
        from lamina.store.s3client import parse_s3_url  # on use: `lamina registry --help` imports no store

        try:
            return parse_s3_url(value).url()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if key == "tls_reload_seconds":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 86400:
            raise ConfigError(f"tls_reload_seconds: expected a number of seconds from 0.1 to 86400, got {value!r}")
        return float(value)
    known = "listen, root, workers, max_manifest_bytes, legacy_buildkit_cache, allow_empty_layers, "
    known += "tls_cert, tls_key, tls_reload_seconds, "
    known += "max_json_depth, max_header_bytes, automatic_crossmount, "
    known += "upload_expiry_seconds, limits, blobs, metadata, "
    known += "sqlite_synchronous, verify_on_read, auth, immutable_tags, gc, lifecycle, access_log, metrics, "
    raise ConfigError(f"unknown setting {key!r} (known: {known}console)")


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text) or {} if path.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {first}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    return doc


def _check_shared_signing_key(metadata: str | None, ops: OpsSettings) -> None:
    """Replicas (a PostgreSQL ``metadata``) must sign tokens with one key: a token one replica issued is
    presented to any other. The default key is created under each replica's own root, so it must be named."""
    auth = ops.auth
    if metadata is None or auth is None or auth.token.external_public_key is not None:
        return
    if auth.token.signing_key is None:
        raise ConfigError(
            "auth.token.signing_key: required with metadata = \"postgresql://...\": every replica must sign "
            "tokens with the same key; point it at one PEM file deployed to each replica (docs/registry.md, "
            "\"Running several replicas\")"
        )


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> RegistryConfig:
    """Defaults < ``$LAMINA_REGISTRY_ROOT`` < file < ``overrides`` (CLI options; None values skipped)."""
    values: dict[str, Any] = {"root": Path(os.environ.get("LAMINA_REGISTRY_ROOT") or "lamina-data")}
    values["workers"] = os.cpu_count() or 1
    settings: dict[str, Any] = dict(_read_file(path)) if path is not None else {}
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    from .ops import OPS_KEYS, parse_ops_setting

    ops = _default_ops()
    for key, value in settings.items():
        if key in OPS_KEYS:
            ops = parse_ops_setting(ops, str(key), value)
            continue
        checked = _check(str(key), value)
        if key == "listen":
            values["host"], values["port"] = checked
        else:
            values[key] = checked
    values["ops"] = ops
    _check_shared_signing_key(values.get("metadata"), ops)
    if (values.get("tls_cert") is None) != (values.get("tls_key") is None):
        given, missing = ("tls_cert", "tls_key") if values.get("tls_cert") is not None else ("tls_key", "tls_cert")
        raise ConfigError(f"{given} is set but {missing} is not: HTTPS needs both the certificate and its key")
    fields = {f.name for f in dataclasses.fields(RegistryConfig)}
    return RegistryConfig(**{k: v for k, v in values.items() if k in fields})

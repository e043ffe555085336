"""``lamina registry gc``, ``lifecycle`` and ``token-cert``: the offline entry points of ops jobs.

gc and lifecycle run against a root a server may be using at the same time (that is the point of online
GC): they open the storage the same way a worker does and take the same locks and transactions.
token-cert prints the certificate another registry needs to trust the token service (docs/registry.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, RegistryConfig, load_config

if TYPE_CHECKING:
    from lamina.store import Storage

__all__ = ["add_ops_commands"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", metavar="DIR",
                        help="data directory (default $LAMINA_REGISTRY_ROOT, else ./lamina-data)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML, or YAML if *.yaml/*.yml)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed and remove nothing")


def add_ops_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gc = sub.add_parser("gc", help="delete unreferenced blobs (and untagged manifests if configured)",
                        description="Garbage-collect a registry root, safely while the server runs.")
    _common(gc)
    gc.add_argument("--grace", type=float, metavar="SECONDS",
                    help="keep blobs and manifests newer than this (default: gc.grace_seconds, 3600)")
    gc.add_argument("--delete-untagged", action="store_true", default=None,
                    help="also delete untagged manifests (default: gc.delete_untagged)")
    gc.set_defaults(func=gc_command)
    lifecycle = sub.add_parser("lifecycle", help="apply the lifecycle (retention) rules of the config",
                               description="Expire manifests by the [lifecycle] rules; blobs go at the next gc.")
    _common(lifecycle)
    lifecycle.set_defaults(func=lifecycle_command)
    cert = sub.add_parser(
        "token-cert", help="print the token signing key's certificate (another registry's rootcertbundle)",
        description="Print the self-signed certificate (PEM) of the token signing key of the [auth] token service, "
                    "for CNCF distribution's auth.token.rootcertbundle. Creates the key if the server has not yet.",
    )
    cert.add_argument("--root", metavar="DIR",
                      help="data directory (default $LAMINA_REGISTRY_ROOT, else ./lamina-data)")
    cert.add_argument("--config", type=Path, metavar="FILE", help="settings file with the [auth] section")
    cert.add_argument("--out", type=Path, metavar="FILE", help="write the certificate here (default: stdout)")
    cert.set_defaults(func=token_cert_command)
    from .fsckcli import add_fsck_command
    from .migratecli import add_migrate_command

    add_fsck_command(sub)
    add_migrate_command(sub)


def _fail(message: str) -> int:
    print(f"lamina registry: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _open_root(config: RegistryConfig) -> Iterator[Storage]:
    """The root's storage, opened as a server worker opens it and closed afterwards; a missing root is a
    StoreError like any other storage failure (the commands turn it into exit status 2)."""
    from lamina.store import StoreError, open_storage

    if not config.root.is_dir():
        raise StoreError(f"root {config.root} does not exist")
    storage = open_storage(config.root, synchronous=config.sqlite_synchronous, blobs=config.blobs,
                           metadata=config.metadata)
    try:
        yield storage
    finally:
        storage.close()


def gc_command(args: argparse.Namespace) -> int:
    from lamina.store import StoreError

    from .gc import GcBusy, format_report, run_gc

    try:
        config = load_config(args.config, {"root": args.root})
    except ConfigError as exc:
        return _fail(str(exc))
    settings = config.ops.gc
    if args.grace is not None:
        if args.grace < 0:
            return _fail(f"--grace: expected seconds >= 0, got {args.grace}")
        settings = dataclasses.replace(settings, grace_seconds=args.grace)
    if args.delete_untagged:
        settings = dataclasses.replace(settings, delete_untagged=True)
    try:
        with _open_root(config) as storage:
            result = run_gc(storage, settings, dry_run=args.dry_run)
    except GcBusy as exc:
        print(f"lamina registry: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        return _fail(str(exc))
    for line in format_report(result, dry_run=args.dry_run):
        print(line)
    return 0


def lifecycle_command(args: argparse.Namespace) -> int:
    from lamina.store import StoreError

    from .lifecycle import apply_lifecycle, apply_lifecycle_once, format_result

    try:
        config = load_config(args.config, {"root": args.root})
    except ConfigError as exc:
        return _fail(str(exc))
    if not config.ops.lifecycle.rules:
        return _fail("no [[lifecycle.rules]] in the config: nothing to apply")
    try:
        with _open_root(config) as storage:
            if args.dry_run:
                result = apply_lifecycle(storage, config.ops.lifecycle, dry_run=True)
            else:
                once = apply_lifecycle_once(storage, config.ops.lifecycle)
                if once is None:
                    print("lamina registry: lifecycle rules are being applied by another process or replica "
                          "(it holds the lifecycle lease); nothing done", file=sys.stderr)
                    return 1
                result = once
    except StoreError as exc:
        return _fail(str(exc))
    for line in format_result(result, dry_run=args.dry_run):
        print(line)
    return 0


def token_cert_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, {"root": args.root})
    except ConfigError as exc:
        return _fail(str(exc))
    auth = config.ops.auth
    where = f"{args.config}" if args.config else "the settings (pass --config FILE)"
    if auth is None:
        return _fail(f"no [auth] section in {where}: the token service is off, there is no signing key")
    if auth.token.external_public_key is not None:
        return _fail(f"auth.token.external_public_key is set in {where}: this registry signs no tokens; give the "
                     "other registry the external issuer's certificate instead")
    from cryptography.hazmat.primitives import serialization

    from .auth.cert import signing_certificate
    from .auth.tokens import load_or_create_key

    path = auth.token.key_path(config.root.absolute())
    created = not path.exists()
    previous = os.umask(0o077)  # a key created here is as private as one the server creates
    try:
        key = load_or_create_key(path)
    except (ConfigError, OSError) as exc:
        return _fail(str(exc) if isinstance(exc, ConfigError) else f"token signing key {path}: {exc.strerror or exc}")
    finally:
        os.umask(previous)
    if created:
        print(f"lamina registry: created the token signing key {path}", file=sys.stderr)
    pem = signing_certificate(key).public_bytes(serialization.Encoding.PEM)
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
        return 0
    try:
        args.out.write_bytes(pem)
        args.out.chmod(0o644)  # a public certificate, read by the other registry's user
    except OSError as exc:
        return _fail(f"--out {args.out}: {exc.strerror or exc}")
    return 0

"""``lamina registry fsck [--root DIR | --config FILE] [--repair] [--json]``: the command around
:mod:`lamina.registry.fsck`. Progress on stderr, the report on stdout; exit status 0 when the root is
clean, 1 when problems were found (repaired or not), 2 for a usage error or a root it cannot read."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_config

__all__ = ["add_fsck_command", "fsck_command"]


def add_fsck_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fsck = sub.add_parser(
        "fsck", help="re-hash every blob and check the database against the files",
        description="Check a registry root for corruption: re-hash every blob, check the database against the "
                    "files both ways, report the manifests and tags each problem affects. Read-only (safe while "
                    "the server runs) unless --repair. Exit status: 0 clean, 1 problems found, 2 usage.",
    )
    fsck.add_argument("--root", metavar="DIR",
                      help="data directory (default $LAMINA_REGISTRY_ROOT, else ./lamina-data)")
    fsck.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML, or YAML if *.yaml/*.yml)")
    fsck.add_argument("--repair", action="store_true",
                      help="quarantine corrupt blobs and manifests and stray files, fix the index (holds gc.lock)")
    fsck.add_argument("--json", action="store_true", help="print the report as one JSON document")
    fsck.set_defaults(func=fsck_command)


def _fail(message: str) -> int:
    print(f"lamina registry: {message}", file=sys.stderr)
    return 2


def fsck_command(args: argparse.Namespace) -> int:
    from lamina.store import StoreError, StorePaths

    from .fsck import format_report, report_json, run_fsck

    try:
        config = load_config(args.config, {"root": args.root})
    except ConfigError as exc:
        return _fail(str(exc))
    paths = StorePaths(config.root.absolute())
    local_blobs = config.blobs is None and not paths.blobs.is_dir()
    if (config.metadata is None and not paths.metadata_db.is_file()) or local_blobs:
        return _fail(f"root {paths.root} is not a registry root (no metadata.db and blobs/): check --root or --config")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = run_fsck(paths, repair=args.repair, progress=progress, metadata=config.metadata, blobs=config.blobs)
    except (StoreError, OSError) as exc:
        return _fail(f"fsck of {paths.root} failed: {exc}")
    except Exception as exc:  # sqlite3.Error and the like: one line, never a traceback
        return _fail(f"fsck of {paths.root} failed: {type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        for line in format_report(report, repair=args.repair):
            print(line)
    return 0 if report.clean else 1

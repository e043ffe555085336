"""``lamina registry migrate --from ROOT --to CONFIG [--force]``: copy an embedded registry (SQLite and
files under ROOT) into the PostgreSQL + S3 storage that CONFIG names (``metadata`` and ``blobs``).

Progress lines on stderr, the summary on stdout. Exit status 0 when everything was copied and every
digest verified, 1 when some items failed (each named; run again after fixing them: done items are
skipped), 2 for a usage error, a source that is not a registry root, or a refused target. The engine,
and what resumable and verified mean, is :mod:`lamina.store.migrate`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from .config import ConfigError, load_config

__all__ = ["add_migrate_command", "migrate_command"]


def add_migrate_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    migrate = sub.add_parser(
        "migrate", help="copy an embedded registry root into PostgreSQL + S3 (resumable, verified)",
        description="Copy the blobs, links, manifests and tags of an embedded registry (--from ROOT) into the "
                    "PostgreSQL metadata and S3 blobs the settings file names (--to CONFIG). Every blob is "
                    "re-hashed as it streams to S3, every manifest checked against its digest. Run it again "
                    "after an interruption: what is done is skipped. Stop pushes to ROOT first (what is pushed "
                    "meanwhile is copied by the next run; deletions are not).",
    )
    migrate.add_argument("--from", dest="source", required=True, type=Path, metavar="ROOT",
                         help="the embedded registry's data directory (metadata.db and blobs/)")
    migrate.add_argument("--to", dest="target", required=True, type=Path, metavar="CONFIG",
                         help="settings file with metadata = \"postgresql://...\" and blobs = \"s3://...\"")
    migrate.add_argument("--force", action="store_true",
                         help="copy into a target that already holds another registry (its content is kept)")
    migrate.add_argument("--parallel", type=int, default=4, metavar="N", help="blobs copied at once (default 4)")
    migrate.set_defaults(func=migrate_command)


def _fail(message: str) -> int:
    print(f"lamina registry: {message}", file=sys.stderr)
    return 2


def migrate_command(args: argparse.Namespace) -> int:
    from lamina.store import StoreError, StorePaths, open_storage
    from lamina.store.migrate import Migration, MigrationRefused

    if args.parallel < 1:
        return _fail(f"--parallel: expected a number >= 1, got {args.parallel}")
    paths = StorePaths(args.source.absolute())
    if not paths.metadata_db.is_file() or not paths.blobs.is_dir():
        return _fail(f"--from {args.source}: not an embedded registry root (no metadata.db and blobs/ in it)")
    try:
        config = load_config(args.target)
    except ConfigError as exc:
        return _fail(str(exc))
    missing = [key for key in ("metadata", "blobs") if getattr(config, key) is None]
    if missing:
        return _fail(f"--to {args.target}: sets no {' and no '.join(missing)}: migrate copies into PostgreSQL "
                     "(metadata = \"postgresql://...\") and S3 (blobs = \"s3://...\")")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="lamina-migrate-") as scratch:  # nothing of the target lives here
        try:
            source = open_storage(paths.root)
            target = open_storage(Path(scratch), blobs=config.blobs, metadata=config.metadata)
        except StoreError as exc:
            return _fail(str(exc))
        try:
            migration = Migration(source, target, source_root=paths.root, force=args.force,
                                  parallel=args.parallel, progress=progress)
            result = asyncio.run(migration.run())
        except MigrationRefused as exc:
            return _fail(str(exc))
        except StoreError as exc:
            return _fail(f"migrate from {paths.root} failed: {exc}")
        finally:
            source.close()
            target.close()
    for failure in result.failures:
        print(f"FAILED {failure}")
    print(result.summary())
    return 1 if result.failures else 0

"""Metadata store micro-benchmark: the request path's hot operations per second, per backend, and the
CPU microseconds each costs this process (steadier than wall time on a loaded machine; the database
server's CPU, for PostgreSQL, is not in it).

Measures, on one store used from one thread: blob link commits (``link_uploaded_blob``, one per finished
push), manifest PUTs with one reference and a tag (one transaction each), manifest GETs by tag (the
hot read), and ``linked_blob_size`` lookups (every blob HEAD/GET). SQLite runs with ``synchronous=FULL``
in a temp dir under /var/tmp; PostgreSQL (``--postgres URL``, e.g. from scripts/services/postgres.sh)
in a fresh database it creates and drops. Compare runs on one machine only; medians of ``--repeats``.

Usage: ``.venv/bin/python bench/metadata.py [--ops 400] [--repeats 3] [--postgres URL]``
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lamina.oci import Digest
from lamina.store import ManifestRecord, ManifestReference, UploadSession, open_storage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _digest(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def _rates(meta: object, ops: int) -> dict[str, float]:
    """Operations per second of each hot operation on ``meta`` (a MetadataStore)."""
    store = meta  # typed loosely: the bench also runs against older lamina trees
    layer = _digest(b"layer")
    store.link_blob("bench/app", layer, 5)  # type: ignore[attr-defined]
    rates: dict[str, float] = {}

    def timed(name: str, count: int, one: Callable[[int], object]) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            one(i)
        rates[name] = count / (time.perf_counter() - start)
        rates[name.replace("/s", " CPU us")] = (time.process_time() - cpu) / count * 1e6

    run = uuid.uuid4().hex[:8]

    def link(i: int) -> None:
        session = UploadSession(f"{run}-{i}", "bench/app", 0, time.time(), time.time())
        store.create_upload(session)  # type: ignore[attr-defined]
        store.link_uploaded_blob(session.id, "bench/app", _digest(f"{run}-{i}".encode()), 10)  # type: ignore[attr-defined]

    def put(i: int) -> None:
        content = f'{{"run":"{run}","n":{i}}}'.encode()
        record = ManifestRecord("bench/app", _digest(content), "application/vnd.oci.image.manifest.v1+json",
                                content, "image", None, None, None, time.time(), None)
        store.put_manifest(record, [ManifestReference(layer, 5)], f"t{run}-{i}")  # type: ignore[attr-defined]

    timed("upload commit/s", ops, link)
    timed("manifest PUT/s", ops, put)
    timed("GET by tag/s", ops * 5, lambda i: store.get_manifest("bench/app", f"t{run}-{i % ops}"))  # type: ignore[attr-defined]
    timed("blob lookup/s", ops * 5, lambda i: store.linked_blob_size("bench/app", layer))  # type: ignore[attr-defined]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL metadata at this server")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="lamina-bench-meta-", dir="/var/tmp") as tmp:
        for repeat in range(args.repeats):
            storage = open_storage(Path(tmp) / f"r{repeat}")
            results.setdefault("sqlite (FULL)", []).append(_rates(storage.metadata, args.ops))
            storage.close()
            if args.postgres:
                from helpers.postgres import scratch_database
                from lamina.store.postgres import PostgresMetadataStore

                with scratch_database(args.postgres) as url:
                    store = PostgresMetadataStore(url)
                    store.create_schema()
                    results.setdefault("postgresql", []).append(_rates(store, args.ops))
                    store.close()
    names = list(next(iter(results.values()))[0])
    print(f"{'':22s}" + "".join(f"{backend:>18s}" for backend in results))
    for name in names:
        print(f"{name:22s}" + "".join(f"{statistics.median(r[name] for r in runs):18.0f}" for runs in results.values()))


if __name__ == "__main__":
    main()

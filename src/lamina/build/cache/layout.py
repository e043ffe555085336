"""``type=local`` caches: an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256/``).

Export writes each missing blob as temp + fsync + rename (existing blobs are kept: content-addressed),
then the cache manifest, then ``index.json`` — itself replaced atomically, with the manifest under
``org.opencontainers.image.ref.name`` = ``tag`` (other tags kept) — so a reader sees the old cache or
the new one. With ``merge=true`` (the default) the export first reads the cache the tag holds and writes
the union (:mod:`lamina.build.cache.cumulative`), holding an exclusive ``flock`` on ``.index.json.lock``
in the directory from that read to the ``index.json`` rename, so concurrent exports to one directory add
up. Import picks the manifest by ``digest=`` or by tag, verifies every document it reads, and
gives hits whose ``source`` is ``oci-layout:<dir>``; the layer blobs are copied (and verified) into the
content store only when a step must execute on top of them.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from lamina.build.cache.cumulative import NO_CACHE, CurrentCache, combine
from lamina.build.cache.fingerprint import INPUTS_ANNOTATION
from lamina.build.cache.fingerprint import decode as decode_prints
from lamina.build.cache.graph import CacheExport
from lamina.build.cache.importer import ImportedCache, read_cache_manifest
from lamina.build.cache.registry import RegistryCacheExporter
from lamina.build.cacheopts import CacheFrom
from lamina.build.images import LAYOUT_SOURCE_PREFIX
from lamina.oci import CacheConfig, Descriptor, Digest, FormatError, digest_of, parse_digest
from lamina.oci.cachemerge import canonical
from lamina.oci.layout import REF_NAME_ANNOTATION, blob_path, index_json, oci_layout_json

__all__ = ["LayoutCacheExporter", "import_layout_cache"]

def _read_verified(root: Path, digest: Digest) -> bytes:
    try:
        data = (root / blob_path(digest)).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{root}: blob {digest} is missing") from None
    if not digest.verify(data):
        raise FormatError(f"{root}: blob {digest} does not match its digest")
    return data


def import_layout_cache(spec: CacheFrom) -> ImportedCache:
    """Resolve ``--cache-from type=local,src=DIR[,tag=T|digest=D]``; raises on any failure."""
    assert spec.src is not None
    root = Path(spec.src)
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} is not an OCI layout (no index.json)") from None
    except ValueError as exc:
        raise FormatError(f"{root}/index.json is not valid JSON: {exc}") from None
    entries = [Descriptor.parse(d, "index.json manifests") for d in index.get("manifests") or []]
    if spec.digest:
        wanted = parse_digest(spec.digest)
        chosen = next((d for d in entries if d.digest == wanted), None)
        what = f"digest {wanted}"
    else:
        chosen = next((d for d in entries if (d.annotations or {}).get(REF_NAME_ANNOTATION) == spec.tag), None)
        what = f"tag {spec.tag!r}"
    if chosen is None:
        raise LookupError(f"{root}: no cache manifest with {what}")
    manifest = read_cache_manifest(_read_verified(root, chosen.digest), chosen.media_type)
    raw = _read_verified(root, manifest.config.digest)
    source = f"{LAYOUT_SOURCE_PREFIX}{root.resolve()}"
    return ImportedCache(spec.label, CacheConfig.parse(raw), manifest.layers, source, manifest.annotations)


def _write_file(path: Path, data: bytes | None = None, source: Path | None = None, *, mutable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                out.write(data or b"")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644 if mutable else 0o444)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LayoutCacheExporter(RegistryCacheExporter):
    """CacheExporter for ``--cache-to type=local,dest=DIR[,tag=T]`` (the graph/plan part is shared)."""

    async def write(self, export: CacheExport) -> None:
        assert self.spec.dest is not None
        root = Path(self.spec.dest)
        paths = [await self.images.fetch(layer) for layer in export.layers]
        started = time.monotonic()

        def write() -> tuple[int, CacheExport | None]:
            written = 0
            for layer, path in zip(export.layers, paths, strict=True):
                target = root / blob_path(layer.descriptor.digest)
                if not target.exists():
                    _write_file(target, source=path)
                    written += 1
            root.mkdir(parents=True, exist_ok=True)
            with open(root / ".index.json.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released on close: read, merge and rename as one step
                current = _read_current(root, self.spec.tag) if self.spec.merge else NO_CACHE
                self.summary.merged = len(current.config.records) if self.spec.merge else None
                final = combine(export, current, self.spec, datetime.now(UTC))
                if final is None:
                    return written, None
                for data in (final.config_bytes, final.manifest_bytes):
                    target = root / blob_path(digest_of(data))
                    if not target.exists():
                        _write_file(target, data)
                _write_file(root / "oci-layout", oci_layout_json(), mutable=True)
                _write_index(root, final, self.spec.tag)
            return written, final

        written, final = await asyncio.to_thread(write)
        if final is None:
            self.summary.skipped = "nothing left to export after max-size / max-age"
            return
        self.summary.manifest_digest = final.manifest_digest
        self.summary.records = len(final.config.records)
        self.summary.layers = len(final.descriptors)
        self.summary.outcomes = {"written": written, "exists": len(export.layers) - written}
        self.summary.seconds = time.monotonic() - started


def _read_current(root: Path, tag: str) -> CurrentCache:
    """The cache ``tag`` names in the layout now; none (or an unreadable one) is an empty start."""
    try:
        index = json.loads((root / "index.json").read_text())
        entries = [Descriptor.parse(d, "index.json manifests") for d in index.get("manifests") or []]
        chosen = next((d for d in entries if (d.annotations or {}).get(REF_NAME_ANNOTATION) == tag), None)
        if chosen is None:
            return NO_CACHE
        manifest = read_cache_manifest(_read_verified(root, chosen.digest), chosen.media_type)
        config = CacheConfig.parse(_read_verified(root, manifest.config.digest))
        canonical(config)  # the graph is sound (no cycles)
    except (FileNotFoundError, ValueError, FormatError):
        return NO_CACHE  # replaced by this export, as before merging existed
    present = {d.digest: d for d in manifest.layers if (root / blob_path(d.digest)).exists()}
    prints = decode_prints((manifest.annotations or {}).get(INPUTS_ANNOTATION, ""))
    return CurrentCache(chosen.digest, config, present, prints)


def _write_index(root: Path, export: CacheExport, tag: str) -> None:
    kept: list[Descriptor] = []
    try:
        old = json.loads((root / "index.json").read_text())
        for entry in old.get("manifests") or []:
            desc = Descriptor.parse(entry, "index.json manifests")
            if (desc.annotations or {}).get(REF_NAME_ANNOTATION) != tag:
                kept.append(desc)
    except (FileNotFoundError, ValueError):
        pass  # a fresh (or unreadable, now replaced) index
    top = Descriptor(export.manifest_media_type, export.manifest_digest, len(export.manifest_bytes),
                     annotations={REF_NAME_ANNOTATION: tag})
    _write_file(root / "index.json", index_json([*kept, top]), mutable=True)

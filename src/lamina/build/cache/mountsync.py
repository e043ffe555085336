"""``RUN --mount=type=cache`` directories in the remote cache: extra blobs of the cache manifest, imported lazily.

BuildKit keeps cache mounts only on the machine that made them. Lamina's ``--cache-to type=registry|local``
also exports the cache mounts the build's RUNs used (``cache-mounts=true``, the default), as *packs*
(:mod:`lamina.build.cache.mountpack`: content-addressed ``.tar+zstd`` blobs, split by file names so that an
unchanged part keeps its digest) listed in the same cache manifest — extra ``layers`` of the
``image-manifest=true`` form, extra ``manifests`` entries of the legacy index — each annotated:

- ``dev.lamina.cachemount.id`` (the mount's ``id``) and ``dev.lamina.cachemount.key`` (the local store's key:
  the id plus what seeds a new directory, :func:`lamina.build.cachemounts.cache_key`);
- ``dev.lamina.cachemount.part`` ``i/n`` (the unpacking order) and ``dev.lamina.cachemount.exported``
  (when, for ``max-age``);
- ``containerd.io/uncompressed``: the pack's tar digest, as every cache layer has.

No cache record names a pack (the cacheconfig's ``layers`` list only the records' chains), so BuildKit's
importer, which turns every manifest entry into a descriptor it may look up and builds chains only from
the config's ``layers`` (``cache/remotecache/import.go``, ``v1/parse.go``), never uses one; and the image
never contains one. Only the most recently used instance of a cache is exported; one whose files weigh
more than ``cache-mounts-max-size`` (default 512MiB) is not, with a one-line warning. Merging keeps the
packs of the other caches the ref holds (``merge=true``); this build's packs of a cache replace the older
ones; ``max-age`` drops caches exported longer ago; ``cache-mounts=false`` drops them all.

Import: the solver never asks for packs. When a RUN mounts a cache the local store has no instance of,
the store asks :meth:`CacheMountSync.open`; the first ``--cache-from`` (in flag order) holding a complete set
of packs for that key gives them: downloaded (digest-verified), each tar checked against its diffID, then
streamed into the store's safe extraction. A pack that cannot be had is a ``WARNING`` and the RUN starts
with an empty cache, as on a runner without the cache. A build whose RUNs are all cached fetches nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from lamina.build.cache.base import LayerRef, utc_now
from lamina.build.cache.graph import UNCOMPRESSED_ANNOTATION, CacheExport, assemble
from lamina.oci import Descriptor, Digest, DigestError, parse_digest

if TYPE_CHECKING:
    from lamina.build.cache.importer import ImportedCache
    from lamina.build.cache.mountpack import Entry
    from lamina.build.cache.registry import Reporter
    from lamina.build.cachemounts import CacheMountStore
    from lamina.build.cacheopts import CacheTo
    from lamina.build.contentstore import ContentStore
    from lamina.build.images import ImageSource

__all__ = [
    "MOUNT_EXPORTED",
    "MOUNT_ID",
    "MOUNT_KEY",
    "MOUNT_PART",
    "CacheMountSync",
    "MountPacks",
    "carry_packs",
    "mount_packs",
]

MOUNT_ID = "dev.lamina.cachemount.id"
MOUNT_KEY = "dev.lamina.cachemount.key"
MOUNT_PART = "dev.lamina.cachemount.part"
MOUNT_EXPORTED = "dev.lamina.cachemount.exported"
_WORKERS = 2  # packs hashed / compressed at once


@dataclass(frozen=True)
class MountPacks:
    """The packs of one cache in a manifest, in unpacking order."""

    id: str
    key: str
    descriptors: tuple[Descriptor, ...]
    exported: str | None = None

    @property
    def size(self) -> int:
        return sum(d.size for d in self.descriptors)


def _part(desc: Descriptor) -> tuple[int, int] | None:
    index, _, total = (desc.annotations or {}).get(MOUNT_PART, "").partition("/")
    if not (index.isdigit() and total.isdigit()) or int(index) >= int(total):
        return None
    return int(index), int(total)


def mount_packs(descriptors: Sequence[Descriptor]) -> dict[str, MountPacks]:
    """The complete pack sets among a manifest's entries, by cache key (incomplete or malformed sets, which
    could not be unpacked, are left out)."""
    groups: dict[str, list[Descriptor]] = {}
    for desc in descriptors:
        key = (desc.annotations or {}).get(MOUNT_KEY)
        if key:
            groups.setdefault(key, []).append(desc)
    out: dict[str, MountPacks] = {}
    for key, descs in groups.items():
        parts = {}
        for desc in descs:
            part = _part(desc)
            try:
                parse_digest((desc.annotations or {}).get(UNCOMPRESSED_ANNOTATION, ""))
            except DigestError:
                part = None
            if part is None:
                break
            parts[part[0]] = (part[1], desc)
        else:
            totals = {total for total, _ in parts.values()}
            if len(totals) == 1 and set(parts) == set(range(totals.pop())):
                ordered = tuple(parts[i][1] for i in range(len(parts)))
                notes = ordered[0].annotations or {}
                out[key] = MountPacks(notes.get(MOUNT_ID, ""), key, ordered, notes.get(MOUNT_EXPORTED))
    return out


def _older(exported: str | None, now: datetime, max_age: timedelta | None) -> bool:
    if max_age is None or not exported:
        return False
    try:
        when = datetime.fromisoformat(exported.replace("Z", "+00:00"))
    except ValueError:
        return True
    return now - when > max_age


def carry_packs(
    ours: CacheExport, current: Mapping[Digest, Descriptor], spec: CacheTo, now: datetime
) -> tuple[tuple[LayerRef, ...], tuple[Descriptor, ...]]:
    """The packs an export writes (for :func:`lamina.build.cache.cumulative.combine`): this build's (blobs to
    push, descriptors) and, with ``merge=true``, the complete pack sets of the other caches ``current`` lists,
    unless older than ``max-age``; nothing with ``cache-mounts=false``."""
    if not spec.cache_mounts:
        return (), ()
    own = mount_packs(ours.descriptors)
    descriptors = [d for packs in own.values() for d in packs.descriptors]
    if spec.merge:
        for key, packs in mount_packs(list(current.values())).items():
            if key not in own and not _older(packs.exported, now, spec.max_age):
                descriptors.extend(packs.descriptors)
    wanted = {d.digest for packs in own.values() for d in packs.descriptors}
    refs = tuple(ref for ref in ours.layers if ref.descriptor.digest in wanted)
    return refs, tuple(descriptors)


@dataclass(frozen=True)
class _Packed:
    """One cache packed for export: its files' bytes and, per pack, the blob to push and its descriptor."""

    id: str
    key: str
    files: int  # bytes of regular files
    refs: tuple[LayerRef, ...] = ()
    descriptors: tuple[Descriptor, ...] = ()
    new: int = 0  # packs compressed by this build (the others were known by their diffID)


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f}MiB" if n >= 1024**2 else f"{n / 1024:.1f}KiB"


class CacheMountSync:
    """The build's link between its cache-mount store and its remote caches: the store's
    :class:`~lamina.build.cachemounts.CacheMountSource` (:meth:`open`) and each cache exporter's
    :meth:`attach`. ``caches`` are the resolved ``--cache-from`` s (set once they are), ``store_of`` gives the
    executor's store."""

    def __init__(self, images: ImageSource, content: ContentStore, progress: Reporter,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.images = images
        self.content = content  # where this build's new packs are written
        self.progress = progress
        self.loop = loop
        self.caches: list[ImportedCache] = []
        self.store_of: Callable[[], CacheMountStore] | None = None
        self._packed: dict[str, _Packed] = {}
        self._lock = asyncio.Lock()

    # -- import: the store's CacheMountSource --------------------------------------------------------

    def open(self, cache_id: str, key: str) -> IO[bytes] | None:
        """A tar stream of the first ``--cache-from``'s packs for ``key`` (None: no cache has it, or its packs
        could not be had). Called by the store in a worker thread."""
        paths = asyncio.run_coroutine_threadsafe(self._fetch(cache_id, key), self.loop).result()
        if paths is None:
            return None
        from lamina.build.cache.mountpack import PackStream

        return PackStream(paths)

    async def _fetch(self, cache_id: str, key: str) -> list[Path] | None:
        for cache in self.caches:
            packs = mount_packs(cache.layers).get(key)
            if packs is None or cache.source is None:
                continue
            started = time.monotonic()
            try:
                refs = [LayerRef(Descriptor(d.media_type, d.digest, d.size),
                                 parse_digest((d.annotations or {})[UNCOMPRESSED_ANNOTATION]), None, cache.source)
                        for d in packs.descriptors]
                paths = list(await asyncio.gather(*(self._verified(ref) for ref in refs)))
            except Exception as exc:  # a missing, corrupt or unreachable pack: the RUN starts without the cache
                self.progress.message(f"WARNING: cache mount {cache_id!r}: packs from {cache.name} unusable ({exc}); "
                                      "it starts empty")
                return None
            self.progress.message(f"cache mount {cache_id!r}: {len(paths)} pack(s), {_mib(packs.size)} from "
                                  f"{cache.name} in {time.monotonic() - started:.2f}s")
            return paths
        return None

    async def _verified(self, ref: LayerRef) -> Path:
        """The pack's blob in the content store, its digest, diffID and entries checked."""
        from lamina.build.cache.mountpack import check_pack

        path = await self.images.fetch(ref)  # digest-verified by the download
        try:
            await asyncio.to_thread(check_pack, path, ref.diff_id)
        except OSError as exc:
            raise OSError(f"pack {ref.descriptor.digest}: {exc}") from None
        return path

    # -- export --------------------------------------------------------------------------------------

    async def attach(self, export: CacheExport, spec: CacheTo) -> CacheExport:
        """``export`` with the packs of the caches this build's RUNs mounted (see the module docstring)."""
        if not spec.cache_mounts or self.store_of is None:
            return export
        store = self.store_of()
        if not store.used:
            return export
        refs: list[LayerRef] = []
        descriptors: list[Descriptor] = []
        async with self._lock:  # several --cache-to: each cache is packed once
            for key, cache_id in sorted(store.used.items()):
                packed = self._packed.get(key)
                if packed is None or (not packed.refs and packed.files <= spec.cache_mounts_max_size):
                    try:
                        packed = await asyncio.to_thread(self._pack, store, key, cache_id,
                                                         spec.cache_mounts_max_size)
                    except OSError as exc:
                        self.progress.message(f"WARNING: cache mount {cache_id!r} not exported: {exc}")
                        continue
                    if packed is None:
                        continue
                    self._packed[key] = packed
                if packed.files > spec.cache_mounts_max_size:
                    self.progress.message(
                        f"WARNING: cache mount {cache_id!r} not exported to {spec.label}: its files weigh "
                        f"{_mib(packed.files)}, more than cache-mounts-max-size={_mib(spec.cache_mounts_max_size)}"
                    )
                    continue
                refs.extend(packed.refs)
                descriptors.extend(packed.descriptors)
                self.progress.message(f"cache mount {cache_id!r}: {len(packed.refs)} pack(s) of {_mib(packed.files)}"
                                      f" ({packed.new} new) to {spec.label}")
        if not refs:
            return export
        return assemble(export.config, (*export.layers, *refs), (*export.descriptors, *descriptors), export.prints,
                        image_manifest=spec.image_manifest, oci_mediatypes=spec.oci_mediatypes)

    def _known(self) -> dict[Digest, LayerRef]:
        """Packs the ``--cache-from`` s hold, by diffID: an unchanged pack is reused, never compressed again."""
        known: dict[Digest, LayerRef] = {}
        for cache in reversed(self.caches):  # the first listed wins
            for packs in mount_packs(cache.layers).values():
                for d in packs.descriptors:
                    diff = parse_digest((d.annotations or {})[UNCOMPRESSED_ANNOTATION])
                    known[diff] = LayerRef(Descriptor(d.media_type, d.digest, d.size), diff, None, cache.source)
        return known

    def _pack(self, store: CacheMountStore, key: str, cache_id: str, limit: int) -> _Packed | None:
        """Split the most recently used instance of ``key`` into packs (blocking: run in a thread); the packs
        are hashed and, when new, compressed by two threads (zstd and sha256 release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        from lamina.build.cache.mountpack import PACK_MEDIA_TYPE, plan_packs, walk

        entries = [entry for entry in store.entries() if entry.key == key]
        if not entries:
            return None
        entry = max(entries, key=store.last_used)
        known = self._known()
        exported = utc_now()
        with store.reading(entry) as root:
            items = walk(root)
            files = sum(item.size for item in items)
            if files > limit:
                return _Packed(cache_id, key, files)
            packs = plan_packs(items)
            with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="cachemount-pack") as pool:
                done = list(pool.map(lambda pack: self._one(root, pack, known), packs))
        descriptors = []
        for index, (ref, _) in enumerate(done):
            notes = {UNCOMPRESSED_ANNOTATION: str(ref.diff_id), MOUNT_ID: cache_id, MOUNT_KEY: key,
                     MOUNT_PART: f"{index}/{len(done)}", MOUNT_EXPORTED: exported}
            descriptors.append(Descriptor(PACK_MEDIA_TYPE, ref.descriptor.digest, ref.descriptor.size,
                                          annotations=notes))
        return _Packed(cache_id, key, files, tuple(ref for ref, _ in done), tuple(descriptors),
                       sum(1 for _, new in done if new))

    def _one(self, root: Path, pack: Sequence[Entry], known: Mapping[Digest, LayerRef]) -> tuple[LayerRef, bool]:
        """A pack's blob: one a ``--cache-from`` lists with the same tar digest (found by hashing only), else
        written now (hashed and compressed in one pass); True when written."""
        from lamina.build.cache.mountpack import diff_id

        expected = None
        if known:
            expected = diff_id(root, pack)
            ref = known.get(expected)
            if ref is not None:
                return ref, False
        return self._write(root, pack, expected), True

    def _write(self, root: Path, pack: Sequence[Entry], expected: Digest | None) -> LayerRef:
        """Compress a pack into the content store; its LayerRef (source None: the local store has it)."""
        from lamina.build.cache.mountpack import PACK_MEDIA_TYPE, compress_pack

        with self.content.writer() as blob:
            diff = compress_pack(root, pack, blob)
            if expected is not None and diff != expected:
                raise OSError(f"a file under the cache changed while it was packed ({diff} != {expected})")
            size = blob.size
            digest = blob.commit()
        return LayerRef(Descriptor(PACK_MEDIA_TYPE, digest, size), diff, None, None)

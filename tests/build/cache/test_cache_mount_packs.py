"""The cache-mount packs themselves (lamina.build.cache.mountpack / mountsync), without a build: splitting by
names keeps unchanged packs' bytes, a pack round-trips through the store's safe extraction to the same bytes,
and the manifest-side rules (complete sets only, merge, max-age, the off switch)."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.build.cache.base import LayerRef
from lamina.build.cache.cumulative import CurrentCache, combine
from lamina.build.cache.graph import UNCOMPRESSED_ANNOTATION, CacheExport, assemble
from lamina.build.cache.mountpack import (
    MAX_PACK,
    MIN_PACK,
    PACK_MEDIA_TYPE,
    Entry,
    PackStream,
    check_pack,
    compress_pack,
    diff_id,
    plan_packs,
    walk,
)
from lamina.build.cache.mountsync import MOUNT_EXPORTED, MOUNT_ID, MOUNT_KEY, MOUNT_PART, carry_packs, mount_packs
from lamina.build.cacheopts import parse_cache_to
from lamina.oci import CacheConfig, CacheLayer, CacheRecord, CacheResult, Descriptor, digest_of

_ST = os.stat(".")


def _entries(names: list[str], size: int) -> list[Entry]:
    return [Entry(name, "file", size, _ST) for name in sorted(names, key=os.fsencode)]


def _names(packs: list[list[Entry]]) -> list[tuple[str, ...]]:
    return [tuple(e.name for e in pack) for pack in packs]


def test_adding_a_file_changes_only_the_packs_around_it() -> None:
    names = [f"http/{i:04x}/body" for i in range(400)]
    before = _names(plan_packs(_entries(names, 100_000)))  # 40 MB of files
    assert len(before) > 5
    assert all(sum(100_000 + 512 for _ in pack) <= MAX_PACK + 101_000 for pack in before)
    after = _names(plan_packs(_entries([*names, "http/0123/extra"], 100_000)))
    changed = set(after) - set(before)
    assert 1 <= len(changed) <= 2, changed  # the new file's pack (and one a moved size cut touched)
    assert len(set(before) - set(after)) == len(changed)


def test_a_large_file_is_a_pack_of_its_own_and_small_caches_one_pack() -> None:
    entries = [*_entries(["a", "b", "c"], 10), Entry("d", "file", MAX_PACK, _ST), *_entries(["e"], 10)]
    assert _names(plan_packs(entries)) == [("a", "b", "c"), ("d",), ("e",)]
    assert len(plan_packs(_entries([f"f{i}" for i in range(50)], 1000))) == 1
    assert MIN_PACK < MAX_PACK


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file").write_bytes(b"x" * 3000)
    (root / "sub" / "group-writable").write_text("w")
    (root / "sub" / "group-writable").chmod(0o664)
    os.link(root / "sub" / "file", root / "sub" / "hardlink")
    os.symlink("sub/file", root / "link")
    (root / "empty").mkdir()
    root.chmod(0o750)


def _unpack(paths: list[Path], dest: Path) -> None:
    """What the cache-mount store does with the stream (lamina.build.cachemounts: ``filter="tar"``)."""
    dest.mkdir(mode=0o700)
    with PackStream(paths) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(dest, numeric_owner=True, filter="tar")


def _compressed(root: Path, pack: list[Entry], path: Path) -> Path:
    with open(path, "wb") as out:
        compress_pack(root, pack, out)
    return path


def test_packs_unpack_as_one_tree_and_repack_to_the_same_bytes(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    _tree(root)
    entries = walk(root)
    assert entries[0].name == "./" and [e.name for e in entries][1:3] == ["empty/", "link"]
    packs = [entries[:3], entries[3:]]  # two packs: the stream joins them
    blobs = [_compressed(root, pack, tmp_path / f"p{i}") for i, pack in enumerate(packs)]
    for pack, blob in zip(packs, blobs, strict=True):
        check_pack(blob, diff_id(root, pack))
    copy = tmp_path / "copy"
    _unpack(blobs, copy)
    assert (copy / "sub" / "file").read_bytes() == b"x" * 3000
    assert os.readlink(copy / "link") == "sub/file"
    assert (copy / "sub" / "hardlink").stat().st_ino == (copy / "sub" / "file").stat().st_ino
    assert copy.stat().st_mode & 0o777 == 0o750  # the cache directory's own mode comes along
    assert (copy / "sub" / "group-writable").stat().st_mode & 0o777 == 0o644  # masked as the filter masks
    again = walk(copy)
    assert [diff_id(copy, p) for p in (again[:3], again[3:])] == [diff_id(root, p) for p in packs]


def test_a_pack_whose_tar_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    _tree(root)
    blob = _compressed(root, walk(root), tmp_path / "p")
    try:
        check_pack(blob, digest_of(b"something else"))
    except OSError as exc:
        assert "the cache says" in str(exc)
    else:
        raise AssertionError("a pack with another diffID was accepted")
    (tmp_path / "bad").write_bytes(b"garbage")
    try:
        check_pack(tmp_path / "bad", digest_of(b""))
    except OSError as exc:
        assert "not a zstd stream" in str(exc)
    else:
        raise AssertionError("garbage was accepted as a pack")


def _pack(key: str, index: int, total: int, blob: bytes, exported: str = "2026-12-01T00:00:00.000000Z") -> Descriptor:
    return Descriptor(PACK_MEDIA_TYPE, digest_of(blob), len(blob), annotations={
        UNCOMPRESSED_ANNOTATION: str(digest_of(blob + b"tar")), MOUNT_ID: f"id-{key}", MOUNT_KEY: key,
        MOUNT_PART: f"{index}/{total}", MOUNT_EXPORTED: exported})


def test_only_complete_pack_sets_count() -> None:
    a0, a1, b1 = _pack("a", 0, 2, b"a0"), _pack("a", 1, 2, b"a1"), _pack("b", 1, 2, b"b1")
    found = mount_packs([a1, b1, a0])
    assert list(found) == ["a"] and found["a"].descriptors == (a0, a1) and found["a"].id == "id-a"
    broken = replace(a1, annotations={**(a1.annotations or {}), MOUNT_PART: "1/3"})
    assert mount_packs([a0, broken]) == {}


def _export(packs: list[Descriptor]) -> CacheExport:
    layer = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest_of(b"layer"), 5,
                       annotations={UNCOMPRESSED_ANNOTATION: str(digest_of(b"diff"))})
    ref = LayerRef(Descriptor(layer.media_type, layer.digest, 5), digest_of(b"diff"))
    config = CacheConfig((CacheLayer(layer.digest, -1),),
                         (CacheRecord(digest_of(b"key"), (CacheResult(0, "2026-12-01T00:00:00Z"),), ()),))
    refs = [LayerRef(Descriptor(d.media_type, d.digest, d.size), digest_of(b"x")) for d in packs]
    return assemble(config, (ref, *refs), (layer, *packs), {}, image_manifest=True, oci_mediatypes=True)


def test_merge_keeps_other_caches_packs_replaces_ours_and_the_switches_drop_them() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    ours = _export([_pack("a", 0, 1, b"a-new")])
    old = {d.digest: d for d in (_pack("a", 0, 1, b"a-old"), _pack("b", 0, 1, b"b"))}
    refs, descs = carry_packs(ours, old, parse_cache_to("type=registry,ref=r/x"), now)
    assert {d.annotations[MOUNT_KEY]: d.digest for d in descs} == {"a": digest_of(b"a-new"), "b": digest_of(b"b")}
    assert [r.descriptor.digest for r in refs] == [digest_of(b"a-new")]  # only ours are pushed
    _, descs = carry_packs(ours, old, parse_cache_to("type=registry,ref=r/x,merge=false"), now)
    assert [d.annotations[MOUNT_KEY] for d in descs] == ["a"]
    _, descs = carry_packs(ours, old, parse_cache_to("type=registry,ref=r/x,max-age=3d"), now)
    assert [d.annotations[MOUNT_KEY] for d in descs] == ["a"]  # b was exported 6 days ago
    assert carry_packs(ours, old, parse_cache_to("type=registry,ref=r/x,cache-mounts=false"), now) == ((), ())
    final = combine(ours, CurrentCache(digest_of(b"m"), CacheConfig((), ()), old), parse_cache_to(
        "type=registry,ref=r/x"), now + timedelta(seconds=1))
    assert final is not None
    assert len(final.config.layers) == 1  # no record ever names a pack
    assert {d.annotations.get(MOUNT_KEY) for d in final.descriptors} == {None, "a", "b"}
    assert final.manifest_bytes.count(b"dev.lamina.cachemount.key") == 2


def test_a_run_whose_mounts_read_other_files_is_explained_from_fingerprints() -> None:
    """A runner with an empty state explains a RUN --mount miss from the cache's fingerprints, where the
    mounts are one hash each (lamina.build.cache.fingerprint), not the list the local index keeps."""
    from lamina.build.cache.fingerprint import Fingerprints, fingerprint

    def run(read: str) -> dict[str, object]:
        return {"op": "run", "parent": "sha256:" + "a" * 64, "argv": ["pip", "install"],
                "mounts": [{"type": "cache", "target": "/root/.cache/pip"}, {"type": "bind", "input": read}]}

    prints = Fingerprints({"sha256:" + "b" * 64: fingerprint(run("old requirements"))})
    assert prints.explain("sha256:" + "a" * 64, run("new requirements")) == (
        "RUN --mount options or what they read changed")


def test_a_pack_with_an_entry_outside_the_cache_is_refused_before_extraction(tmp_path: Path) -> None:
    import zstandard

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "p").write_bytes(zstandard.ZstdCompressor().compress(data.getvalue()))
    try:
        check_pack(tmp_path / "p", digest_of(data.getvalue()))
    except OSError as exc:
        assert "unsafe entry" in str(exc) and "../escape" in str(exc)
    else:
        raise AssertionError("a pack escaping the cache directory was accepted")


def test_cache_mount_options_parse_and_every_bad_value_is_one_line_naming_it() -> None:
    from lamina.build.cacheopts import CACHE_MOUNTS_MAX_SIZE, CacheOptionError

    spec = parse_cache_to("type=local,dest=/d,cache-mounts-max-size=2GiB")
    assert spec.cache_mounts and spec.cache_mounts_max_size == 2 * 1024**3
    assert parse_cache_to("r/x:c").cache_mounts_max_size == CACHE_MOUNTS_MAX_SIZE == 512 * 1024**2
    assert not parse_cache_to("type=registry,ref=r/x,cache-mounts=false").cache_mounts
    for text, why in (("type=inline,cache-mounts=false", "cache-mounts applies to type=registry and type=local"),
                      ("type=registry,ref=r/x,cache-mounts-max-size=lots", "got 'lots'"),
                      ("type=registry,ref=r/x,cache-mounts=maybe", "cache-mounts must be true or false")):
        try:
            parse_cache_to(text)
        except CacheOptionError as exc:
            assert why in str(exc) and text in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{text} was accepted")


def test_the_most_recently_used_instance_is_the_one_exported(tmp_path: Path) -> None:
    """sharing=private can leave several instances of one cache; the export takes the last one a RUN used."""
    import asyncio

    import zstandard

    from lamina.build.cachemounts import CacheMountStore, Seed
    from lamina.build.contentstore import ContentStore

    content = ContentStore(tmp_path / "content")
    store = CacheMountStore(tmp_path / "cachemounts")
    first = store.acquire("pip", "private", Seed())
    second = store.acquire("pip", "private", Seed())  # the first is held: a second instance
    (first.path / "which").write_text("first")
    (second.path / "which").write_text("second")
    second.release()
    first.release()

    async def attach() -> CacheExport:
        from lamina.build.cache.mountsync import CacheMountSync

        class Quiet:
            def message(self, text: str) -> None:
                pass

        sync = CacheMountSync(None, content, Quiet(), asyncio.get_running_loop())  # type: ignore[arg-type]
        sync.store_of = lambda: store
        return await sync.attach(_export([]), parse_cache_to("type=registry,ref=r/x"))

    for older, expected, other in (("0", b"second", b"first"), ("1", b"first", b"second")):
        os.utime(first.path.parent / f"{older}.lock", (1, 1))  # that instance was used long ago
        os.utime(first.path.parent / f"{1 - int(older)}.lock")  # the other just now
        packs = [d for d in asyncio.run(attach()).descriptors if (d.annotations or {}).get(MOUNT_KEY)]
        assert len(packs) == 1 and (packs[0].annotations or {})[MOUNT_ID] == "pip"
        tar = zstandard.ZstdDecompressor().decompressobj().decompress(content.read(packs[0].digest))
        assert expected in tar and other not in tar

"""The maintenance roles (GcQueries, Inventory, Lifecycle, Health, VerificationRecords, Repairs), run
against every metadata backend (tests/store/conftest.py: SQLite and a real PostgreSQL server)."""

from __future__ import annotations

import time
from pathlib import Path

from contract_helpers import HOUR, INDEX, MetadataFactory, push_blob, push_image, record, storage_on
from store_helpers import blob_digest

from lamina.store import ManifestReference
from lamina.store.sweep import FilesystemSweepBlobs, sweep


def test_gc_removes_only_what_nothing_uses(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    kept = push_image(storage, "app", "kept", "v1", pushed_at=time.time() - 2 * HOUR)
    untagged = push_image(storage, "app", "untagged", None, pushed_at=time.time() - 2 * HOUR)
    orphan = push_blob(storage, "app", b"orphan layer")
    later = time.time() + 2 * HOUR  # every link and file looks two hours old
    stored = list(storage.blobs.iter_digests())

    dry = sweep(storage.metadata, FilesystemSweepBlobs(storage.paths), stored, grace_seconds=HOUR, now=later,
                delete_untagged=True, dry_run=True)
    assert [d for _, d, _ in dry.untagged] == [str(untagged.digest)]
    assert storage.metadata.get_manifest("app", str(untagged.digest)) is not None  # rolled back
    assert storage.metadata.linked_blob_size("app", orphan.digest) == orphan.size

    result = sweep(storage.metadata, FilesystemSweepBlobs(storage.paths), stored, grace_seconds=HOUR, now=later,
                   delete_untagged=True)
    assert storage.metadata.get_manifest("app", str(untagged.digest)) is None
    assert storage.metadata.get_manifest("app", "v1") is not None
    unlinked = {d for _, d, _ in result.links}
    assert str(orphan.digest) in unlinked and storage.metadata.linked_blob_size("app", orphan.digest) is None
    deleted = {d for d, _ in result.blobs}
    assert str(orphan.digest) in deleted and storage.blobs.size(orphan.digest) is None
    kept_layers = {blob_digest(b"config kept"), blob_digest(b"layer kept")}
    assert all(storage.blobs.size(d) is not None for d in kept_layers) and not {str(d) for d in kept_layers} & deleted
    assert kept.digest == storage.metadata.get_manifest("app", "v1").digest  # type: ignore[union-attr]


def test_sweep_guard_sees_links_made_before_it(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    ref = push_blob(storage, "app", b"linked")
    with storage.metadata.sweep_guard() as is_live:
        assert is_live(str(ref.digest)) and not is_live(str(blob_digest(b"never linked")))


def test_inventory_and_lifecycle(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    meta = storage.metadata
    first = push_image(storage, "team/app", "one", "v1", pushed_at=1000.0)
    second = push_image(storage, "team/app", "two", "v2", pushed_at=2000.0)
    meta.put_manifest(second, [], "latest")
    index = record("team/app", b'{"index": 1}', media_type=INDEX, pushed_at=3000.0)
    meta.put_manifest(index, [ManifestReference(first.digest, len(first.content), is_manifest=True)], "multi")
    push_blob(storage, "other", b"x" * 10)

    repos = meta.repository_infos()
    assert [(r.name, r.manifests, r.tags) for r in repos] == [("other", 0, 0), ("team/app", 3, 4)]
    blobs = sum(len(f"{kind} {name}") for kind in ("config", "layer") for name in ("one", "two"))
    assert repos[1].bytes == blobs + len(first.content) + len(second.content) + len(index.content)
    assert repos[1].last_push == 3000.0
    infos = meta.manifest_infos("team/app")
    assert [i.digest for i in infos] == [str(index.digest), str(second.digest), str(first.digest)]
    assert infos[1].tags == ("latest", "v2") and len(infos[2].references) == 2
    assert infos[0].references[0].is_manifest
    totals = meta.storage_totals()
    assert totals["repositories"] == 2 and totals["manifests"] == 3 and totals["storage_bytes"] == blobs + 10

    assert not meta.delete_manifest_if_unchanged("team/app", str(second.digest), ["v2"])  # "latest" too
    assert meta.delete_manifest_if_unchanged("team/app", str(second.digest), ["latest", "v2"])
    assert not meta.delete_manifest_if_unchanged("team/app", str(first.digest), ["v1"])  # the index lists it
    assert meta.get_manifest("team/app", "v1") is not None and meta.get_manifest("team/app", "v2") is None
    assert meta.health_problem() is None


def test_verification_records(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    meta = metadata_factory(tmp_path)
    digest = blob_digest(b"checked")
    identity = (12345, 7, 1_700_000_000_123_456_789, 1_700_000_000_987_654_321)  # nanoseconds: 64-bit
    assert not meta.is_verified(digest, identity)
    meta.record_verified(digest, identity)
    assert meta.is_verified(digest, identity)
    assert not meta.is_verified(digest, (12345, 8, identity[2], identity[3]))
    meta.record_verified(digest, (1, 7, 2, 3))  # the file changed and was checked again
    assert meta.is_verified(digest, (1, 7, 2, 3)) and not meta.is_verified(digest, identity)
    other = blob_digest(b"other")
    meta.record_verified(other, identity)
    assert meta.forget_checks(lambda d: d == str(other)) == 1
    assert not meta.is_verified(other, identity) and meta.is_verified(digest, (1, 7, 2, 3))
    meta.forget_check(digest)
    assert not meta.is_verified(digest, (1, 7, 2, 3))


def test_repairs(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    storage = storage_on(tmp_path, metadata_factory(tmp_path))
    meta = storage.metadata
    rec = push_image(storage, "app", "one", "v1")
    layer = blob_digest(b"layer one")
    push_blob(storage, "copy", b"layer one")
    snap = meta.snapshot()
    assert sorted(snap.links[str(layer)]) == [("app", 9), ("copy", 9)]
    assert ("app", str(rec.digest)) in snap.manifests and snap.tags[("app", str(rec.digest))] == ["v1"]
    assert not snap.corrupt_manifests and not snap.database_errors
    assert {(r, t) for r, _, t, _, _ in snap.refs} == {("app", str(layer)), ("app", str(blob_digest(b"config one")))}

    assert meta.drop_blob_links(layer, lambda: False) is None  # the check said no: nothing changes
    assert meta.linked_blob_size("app", layer) == 9
    assert meta.fix_link_size(layer, 99, lambda: True) == 2 and meta.linked_blob_size("copy", layer) == 99
    assert meta.drop_blob_links(layer, lambda: True) == ["app", "copy"]
    assert meta.linked_blob_size("app", layer) is None
    assert meta.relink("app", str(rec.digest), layer, 9, lambda: True)
    assert not meta.relink("app", str(rec.digest), layer, 9, lambda: True)  # already linked
    assert not meta.relink("app", str(blob_digest(b"no such manifest")), layer, 9, lambda: True)
    seen: list[tuple[bytes, list[str]]] = []
    assert not meta.remove_manifest("app", str(rec.digest), lambda content, tags: seen.append((content, tags)) or False)
    assert seen == [(rec.content, ["v1"])] and meta.get_manifest("app", "v1") is not None
    assert meta.remove_manifest("app", str(rec.digest), lambda content, tags: True)
    assert meta.get_manifest("app", "v1") is None and meta.get_manifest("app", str(rec.digest)) is None

"""The storage half of GC (store.sweep), the inventory views, re-link and immutable tags, on a real root."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from store_helpers import blob_digest

from lamina.oci import Digest
from lamina.store import (
    BlobUnknown,
    ManifestRecord,
    ManifestReference,
    MissingReference,
    Storage,
    TagImmutable,
    open_storage,
)
from lamina.store.sweep import FilesystemSweepBlobs, SweepResult
from lamina.store.sweep import sweep as sweep_store

HOUR = 3600.0


def sweep(storage: Storage, **options: object) -> SweepResult:
    return sweep_store(storage.metadata, FilesystemSweepBlobs(storage.paths), storage.blobs.iter_digests(),
                       **options)  # type: ignore[arg-type]


def _blob(storage: Storage, repo: str, data: bytes, age: float = 0.0) -> Digest:
    digest = blob_digest(data)
    storage.blobs.put(digest, data)
    storage.metadata.link_blob(repo, digest, len(data))
    if age:
        past = time.time() - age
        os.utime(storage.paths.blob(digest), (past, past))
    return digest


def _manifest(storage: Storage, repo: str, blobs: list[Digest], tag: str | None, *, age: float = 0.0,
              children: list[tuple[Digest, int]] = (), kind: str = "image", subject: Digest | None = None,
              immutable: bool = False) -> ManifestRecord:
    body = json.dumps({"blobs": [str(b) for b in blobs], "children": [str(c) for c, _ in children],
                       "tag": tag, "nonce": time.time_ns()}).encode()
    record = ManifestRecord(repo, blob_digest(body), "application/vnd.oci.image.manifest.v1+json", body, kind,
                            None, subject, None, time.time() - age, None)
    refs = [ManifestReference(b, storage.blobs.size(b) or 0) for b in blobs]
    refs += [ManifestReference(c, size, is_manifest=True) for c, size in children]
    storage.metadata.put_manifest(record, refs, tag, immutable=immutable)
    return record


def _age_links(storage: Storage, seconds: float) -> None:
    import sqlite3

    conn = sqlite3.connect(storage.paths.metadata_db)
    conn.execute("UPDATE blob_links SET linked_at = linked_at - ?", (seconds,))
    conn.commit()
    conn.close()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage(tmp_path / "root")


def test_sweep_deletes_only_unreferenced_old_blobs(storage: Storage) -> None:
    kept = _blob(storage, "a", b"kept layer", age=2 * HOUR)
    orphan = _blob(storage, "a", b"orphan layer", age=2 * HOUR)
    _manifest(storage, "a", [kept], "v1")
    _age_links(storage, 2 * HOUR)
    fresh = _blob(storage, "a", b"fresh orphan")
    dry = sweep(storage, grace_seconds=HOUR, dry_run=True)
    assert [d for d, _ in dry.blobs] == [str(orphan)]
    assert storage.blobs.size(orphan) is not None and storage.metadata.linked_blob_size("a", orphan) is not None
    result = sweep(storage, grace_seconds=HOUR)
    assert result.blobs == [(str(orphan), len(b"orphan layer"))] and result.bytes_freed == len(b"orphan layer")
    assert storage.blobs.size(orphan) is None and storage.metadata.linked_blob_size("a", orphan) is None
    assert storage.blobs.size(kept) is not None and storage.blobs.size(fresh) is not None
    # the fresh orphan's link is within the grace period: kept, and a manifest can still use it
    _manifest(storage, "a", [fresh], "v2")


def test_blob_referenced_in_another_repository_keeps_its_file(storage: Storage) -> None:
    shared = _blob(storage, "a", b"shared", age=2 * HOUR)
    storage.metadata.link_blob("b", shared, len(b"shared"))
    _manifest(storage, "b", [shared], "latest")
    _age_links(storage, 2 * HOUR)
    result = sweep(storage, grace_seconds=HOUR)
    assert result.links == [("a", str(shared), len(b"shared"))] and result.blobs == []
    assert storage.metadata.linked_blob_size("a", shared) is None  # stale link in a gone
    assert storage.metadata.linked_blob_size("b", shared) == len(b"shared")
    assert storage.blobs.size(shared) is not None


def test_manifest_put_after_link_sweep_fails_with_missing_reference(storage: Storage) -> None:
    layer = _blob(storage, "a", b"pushed long ago", age=2 * HOUR)
    _age_links(storage, 2 * HOUR)
    sweep(storage, grace_seconds=HOUR)
    with pytest.raises(MissingReference):
        _manifest(storage, "a", [layer], "late")


def test_link_checks_presence_inside_its_transaction_and_relink_refreshes_grace(storage: Storage) -> None:
    gone = blob_digest(b"never stored")
    with pytest.raises(BlobUnknown):
        storage.metadata.link_blob("a", gone, 3, present=lambda: storage.blobs.size(gone) is not None)
    assert storage.metadata.linked_blob_size("a", gone) is None
    layer = _blob(storage, "a", b"relinked", age=2 * HOUR)
    _age_links(storage, 2 * HOUR)
    storage.metadata.link_blob("a", layer, len(b"relinked"))  # a re-upload
    os.utime(storage.paths.blob(layer))
    result = sweep(storage, grace_seconds=HOUR)
    assert result.links == [] and result.blobs == []
    _manifest(storage, "a", [layer], "v1")


def test_untagged_manifests_go_only_when_asked_and_index_children_stay(storage: Storage) -> None:
    layer = _blob(storage, "a", b"child layer", age=2 * HOUR)
    lonely_layer = _blob(storage, "a", b"lonely layer", age=2 * HOUR)
    child = _manifest(storage, "a", [layer], None, age=2 * HOUR)
    _manifest(storage, "a", [], "multi", age=2 * HOUR, children=[(child.digest, len(child.content))])
    lonely = _manifest(storage, "a", [lonely_layer], None, age=2 * HOUR)
    recent = _manifest(storage, "a", [lonely_layer], None)
    _age_links(storage, 2 * HOUR)
    result = sweep(storage, grace_seconds=HOUR)
    assert result.untagged == [] and result.blobs == []
    result = sweep(storage, grace_seconds=HOUR, delete_untagged=True)
    assert [(r, d) for r, d, _ in result.untagged] == [("a", str(lonely.digest))]
    assert storage.metadata.get_manifest("a", str(child.digest)) is not None
    assert storage.metadata.get_manifest("a", str(recent.digest)) is not None
    assert storage.blobs.size(lonely_layer) is not None  # the recent untagged manifest still uses it


def test_untagged_index_takes_its_children_with_it(storage: Storage) -> None:
    layer = _blob(storage, "a", b"layer of an orphan index", age=2 * HOUR)
    child = _manifest(storage, "a", [layer], None, age=2 * HOUR)
    index = _manifest(storage, "a", [], None, age=2 * HOUR, children=[(child.digest, len(child.content))])
    _age_links(storage, 2 * HOUR)
    result = sweep(storage, grace_seconds=HOUR, delete_untagged=True)
    assert {d for _, d, _ in result.untagged} == {str(index.digest), str(child.digest)}
    assert result.blobs == [(str(layer), len(b"layer of an orphan index"))]


def test_referrer_of_a_live_subject_survives_untagged_gc(storage: Storage) -> None:
    subject = _manifest(storage, "a", [], "v1", age=2 * HOUR)
    referrer = _manifest(storage, "a", [], None, age=2 * HOUR, subject=subject.digest)
    result = sweep(storage, grace_seconds=HOUR, delete_untagged=True)
    assert result.untagged == []
    assert storage.metadata.get_manifest("a", str(referrer.digest)) is not None


def test_immutable_tag_is_refused_inside_the_transaction(storage: Storage) -> None:
    first = _manifest(storage, "a", [], "v1", immutable=True)
    with pytest.raises(TagImmutable) as caught:
        _manifest(storage, "a", [], "v1", immutable=True)
    assert caught.value.current == first.digest and "v1" in str(caught.value)
    storage.metadata.put_manifest(first, [], "v1", immutable=True)  # same digest: idempotent
    _manifest(storage, "a", [], "v1")  # a mutable PUT still moves it
    assert storage.metadata.get_manifest("a", "v1").digest != first.digest


def test_inventory_lists_repositories_and_manifests(storage: Storage) -> None:
    one = _blob(storage, "a", b"1" * 100)
    two = _blob(storage, "a", b"2" * 50)
    first = _manifest(storage, "a", [one, two], "v1", age=10)
    second = _manifest(storage, "a", [one], "v2", kind="cache")
    repos = storage.metadata.repository_infos()
    assert [(r.name, r.manifests, r.tags) for r in repos] == [("a", 2, 2)]
    assert repos[0].bytes == 150 + len(first.content) + len(second.content)
    infos = storage.metadata.manifest_infos("a")
    assert [i.digest for i in infos] == [str(second.digest), str(first.digest)]
    assert infos[0].tags == ("v2",) and infos[0].kind == "cache" and len(infos[1].references) == 2
    assert storage.metadata.storage_totals()["storage_bytes"] == 150
    assert not storage.metadata.delete_manifest_if_unchanged("a", str(first.digest), ["other"])
    assert storage.metadata.delete_manifest_if_unchanged("a", str(first.digest), ["v1"])
    assert storage.metadata.get_manifest("a", "v1") is None

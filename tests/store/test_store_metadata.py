"""MetadataStore behaviour, run against every implementation (conftest.METADATA_STORES)."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_helpers import blob_digest

from lamina.oci import Digest, DigestError
from lamina.store import (
    ManifestRecord,
    ManifestReference,
    MetadataStore,
    MissingReference,
    ReferenceSizeMismatch,
    UploadSession,
)

MetadataFactory = Callable[[Path], MetadataStore]
FORK = multiprocessing.get_context("fork")
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


def record(
    repository: str,
    content: bytes,
    *,
    media_type: str = IMAGE,
    kind: str = "image",
    subject: Digest | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
    pushed_at: float = 1000.0,
) -> ManifestRecord:
    return ManifestRecord(
        repository=repository,
        digest=blob_digest(content),
        media_type=media_type,
        content=content,
        kind=kind,
        artifact_type=artifact_type,
        subject=subject,
        annotations_json=json.dumps(annotations) if annotations else None,
        pushed_at=pushed_at,
        last_pulled_at=None,
    )


def blob(store: MetadataStore, repository: str, data: bytes) -> ManifestReference:
    """Link a blob to ``repository`` and return the reference a manifest would make to it."""
    store.link_blob(repository, blob_digest(data), len(data))
    return ManifestReference(blob_digest(data), len(data))


def image(store: MetadataStore, repository: str, name: str, tag: str | None = None, **kw: object) -> ManifestRecord:
    """Push a small image manifest (config + one layer) and return its record."""
    refs = [blob(store, repository, f"config {name}".encode()), blob(store, repository, f"layer {name}".encode())]
    rec = record(repository, json.dumps({"image": name}).encode(), **kw)  # type: ignore[arg-type]
    store.put_manifest(rec, refs, tag)
    return rec


def test_blob_links(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    digest = blob_digest(b"layer")
    assert store.linked_blob_size("a/b", digest) is None
    assert not store.repository_exists("a/b")
    store.link_blob("a/b", digest, 5)
    store.link_blob("a/b", digest, 5)  # idempotent
    store.link_blob("c", digest, 5)
    assert store.repository_exists("a/b")
    assert store.linked_blob_size("a/b", digest) == 5
    assert store.linked_blob_size("other", digest) is None
    assert list(store.repositories_with_blob(digest, limit=10)) == ["a/b", "c"]
    assert list(store.repositories_with_blob(digest)) == ["a/b"]
    assert store.unlink_blob("a/b", digest)
    assert not store.unlink_blob("a/b", digest)
    assert store.linked_blob_size("a/b", digest) is None
    assert list(store.repositories_with_blob(digest, limit=10)) == ["c"]


def test_put_and_get_manifest_by_tag_and_digest(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    rec = image(store, "app", "v1", tag="latest", annotations={"org.example": "yes"})
    by_tag = store.get_manifest("app", "latest")
    by_digest = store.get_manifest("app", str(rec.digest))
    assert by_tag is not None and by_digest is not None
    assert by_tag == by_digest
    assert by_tag.content == rec.content
    assert by_tag.digest == rec.digest
    assert by_tag.media_type == IMAGE
    assert by_tag.kind == "image"
    assert json.loads(by_tag.annotations_json or "") == {"org.example": "yes"}
    assert by_tag.pushed_at == 1000.0
    assert by_tag.tags == ("latest",)
    assert store.get_manifest("app", "missing") is None
    assert store.get_manifest("other", "latest") is None
    assert store.get_manifest("app", str(blob_digest(b"nothing"))) is None
    with pytest.raises(DigestError):
        store.get_manifest("app", "sha256:short")


def test_re_put_is_idempotent_and_adds_tags(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    first = image(store, "app", "v1", tag="a", pushed_at=1000.0)
    again = image(store, "app", "v1", tag="b", pushed_at=2000.0)
    assert first.digest == again.digest
    got = store.get_manifest("app", "b")
    assert got is not None and got.tags == ("a", "b")
    assert got.pushed_at == 1000.0  # the first push time is kept


def test_missing_blob_is_refused_and_nothing_is_stored(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    config = blob(store, "app", b"config")
    absent = ManifestReference(blob_digest(b"never uploaded"), 14)
    rec = record("app", b'{"m":1}')
    with pytest.raises(MissingReference) as caught:
        store.put_manifest(rec, [config, absent], "latest")
    assert caught.value.digest == absent.digest
    assert caught.value.what == "blob"
    assert store.get_manifest("app", str(rec.digest)) is None
    assert store.get_manifest("app", "latest") is None


def test_blob_linked_to_another_repository_does_not_count(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    layer = blob(store, "elsewhere", b"layer")
    with pytest.raises(MissingReference):
        store.put_manifest(record("app", b'{"m":2}'), [layer], None)


def test_size_mismatch_is_refused(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    layer = blob(store, "app", b"layer bytes")
    lying = ManifestReference(layer.digest, layer.size + 1)
    with pytest.raises(ReferenceSizeMismatch, match="11 bytes in this repository, but the manifest says 12"):
        store.put_manifest(record("app", b'{"m":3}'), [lying], "t")
    assert store.list_tags("app", None, None) == []


def test_index_children_must_be_manifests(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    child = image(store, "app", "amd64")
    as_blob = blob(store, "app", b"not a manifest")
    index = record("app", b'{"index":1}', media_type=INDEX, kind="index")
    with pytest.raises(MissingReference) as caught:
        store.put_manifest(index, [ManifestReference(as_blob.digest, as_blob.size, is_manifest=True)], "multi")
    assert caught.value.what == "manifest"
    with pytest.raises(ReferenceSizeMismatch):
        wrong = ManifestReference(child.digest, len(child.content) + 5, is_manifest=True)
        store.put_manifest(index, [wrong], "multi")
    store.put_manifest(index, [ManifestReference(child.digest, len(child.content), is_manifest=True)], "multi")
    got = store.get_manifest("app", "multi")
    assert got is not None and got.kind == "index"


def test_duplicate_references_are_fine(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    empty_layer = blob(store, "app", b"empty layer")
    store.put_manifest(record("app", b'{"dup":1}'), [empty_layer, empty_layer, empty_layer], "t")
    assert store.get_manifest("app", "t") is not None


def test_tag_moves(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    old = image(store, "app", "v1", tag="latest")
    new = image(store, "app", "v2", tag="latest")
    got = store.get_manifest("app", "latest")
    assert got is not None and got.digest == new.digest
    still = store.get_manifest("app", str(old.digest))
    assert still is not None and still.tags == ()  # untagged, not deleted
    assert store.list_tags("app", None, None) == ["latest"]


def test_delete_manifest_removes_its_tags(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    rec = image(store, "app", "v1", tag="a")
    image(store, "app", "v1", tag="b")
    other = image(store, "app", "v2", tag="c")
    assert store.delete_manifest("app", rec.digest)
    assert not store.delete_manifest("app", rec.digest)
    assert store.get_manifest("app", str(rec.digest)) is None
    assert store.get_manifest("app", "a") is None
    assert store.list_tags("app", None, None) == ["c"]
    assert store.get_manifest("app", "c") is not None
    # the blobs stay linked: dropping them is the garbage collector's decision
    assert store.linked_blob_size("app", blob_digest(b"layer v1")) == len(b"layer v1")
    # and the same content may be pushed again
    store.put_manifest(rec, [], "a")
    assert other.digest != rec.digest and store.list_tags("app", None, None) == ["a", "c"]


def test_delete_tag(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    rec = image(store, "app", "v1", tag="a")
    assert store.delete_tag("app", "a")
    assert not store.delete_tag("app", "a")
    assert store.get_manifest("app", "a") is None
    assert store.get_manifest("app", str(rec.digest)) is not None


def test_tag_pagination(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    rec = image(store, "app", "v1")
    names = ["v10", "v2", "latest", "A", "v1", "b_2", "b-1"]
    for name in names:
        store.put_manifest(rec, [], name)
    assert store.list_tags("app", None, None) == sorted(names)
    assert store.list_tags("app", None, 3) == ["A", "b-1", "b_2"]
    assert store.list_tags("app", "b_2", 3) == ["latest", "v1", "v10"]
    assert store.list_tags("app", "v10", 3) == ["v2"]
    assert store.list_tags("app", "v2", 3) == []
    assert store.list_tags("app", None, 0) == []
    assert store.list_tags("unknown", None, None) == []


def test_repository_pagination(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    names = ["library/busybox", "a", "team/app/cache", "team/app", "z0"]
    for name in names:
        blob(store, name, b"x")
    assert store.list_repositories(None, None) == sorted(names)
    assert store.list_repositories(None, 2) == ["a", "library/busybox"]
    assert store.list_repositories("library/busybox", 2) == ["team/app", "team/app/cache"]
    assert store.list_repositories("team/app/cache", 2) == ["z0"]


def test_referrers_and_artifact_type_filter(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    subject = image(store, "app", "v1", tag="v1")
    sbom = record("app", b'{"sbom":1}', kind="artifact", subject=subject.digest, artifact_type="application/spdx+json")
    sig = record(
        "app",
        b'{"sig":1}',
        kind="artifact",
        subject=subject.digest,
        artifact_type="application/vnd.dev.cosign",
        annotations={"k": "v"},
    )
    unrelated = record("app", b'{"other":1}', kind="artifact", artifact_type="application/spdx+json")
    for rec in (sbom, sig, unrelated):
        store.put_manifest(rec, [], None)
    # the same subject digest in another repository is not a referrer here
    store.put_manifest(record("elsewhere", b'{"sbom":1}', subject=subject.digest), [], None)

    found = store.referrers("app", subject.digest, None)
    assert [r.digest for r in found] == sorted([sbom.digest, sig.digest])
    by_digest = {r.digest: r for r in found}
    assert by_digest[sig.digest].size == len(sig.content)
    assert by_digest[sig.digest].media_type == IMAGE
    assert json.loads(by_digest[sig.digest].annotations_json or "") == {"k": "v"}
    only = store.referrers("app", subject.digest, "application/spdx+json")
    assert [r.digest for r in only] == [sbom.digest]
    assert store.referrers("app", subject.digest, "application/none") == []
    assert store.referrers("app", blob_digest(b"no subject"), None) == []


def test_record_pull(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    rec = image(store, "app", "v1", tag="t")
    store.record_pull("app", rec.digest, 5000.0)
    got = store.get_manifest("app", "t")
    assert got is not None and got.last_pulled_at == 5000.0
    store.record_pull("app", rec.digest, 4000.0)  # an older, late report never moves time back
    got = store.get_manifest("app", "t")
    assert got is not None and got.last_pulled_at == 5000.0
    store.record_pull("app", blob_digest(b"no such manifest"), 6000.0)  # silently nothing


def test_upload_sessions_and_expiry(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    store = metadata_factory(tmp_path)
    assert store.get_upload("s1") is None
    store.create_upload(UploadSession("s1", "app", 0, 100.0, 100.0))
    store.create_upload(UploadSession("s2", "app", 0, 100.0, 100.0))
    store.create_upload(UploadSession("s3", "other/repo", 0, 300.0, 300.0))
    store.update_upload("s2", 4096, 250.0)
    assert store.get_upload("s2") == UploadSession("s2", "app", 4096, 100.0, 250.0)
    assert not store.repository_exists("other/repo")  # an upload alone does not create a repository
    assert [s.id for s in store.expired_uploads(200.0)] == ["s1"]
    assert [s.id for s in store.expired_uploads(301.0)] == ["s1", "s2", "s3"]
    store.delete_upload("s1")
    store.delete_upload("s1")
    assert store.get_upload("s1") is None
    assert [s.id for s in store.expired_uploads(1e12)] == ["s2", "s3"]


def test_state_survives_reopening(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    rec = image(metadata_factory(tmp_path), "app", "v1", tag="t")
    again = metadata_factory(tmp_path)
    got = again.get_manifest("app", "t")
    assert got is not None and got.digest == rec.digest


def _push_many(factory: MetadataFactory, root: Path, worker: int, barrier: object) -> None:
    store = factory(root)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(12):
        image(store, f"repo{i % 3}", f"w{worker}-{i}", tag=f"w{worker}-{i}")
        image(store, "shared", "same", tag="latest")


def test_concurrent_writers_in_processes(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    parent = metadata_factory(tmp_path)
    image(parent, "shared", "same", tag="latest")  # the parent's pool is open before the fork
    barrier = FORK.Barrier(4)
    workers = [FORK.Process(target=_push_many, args=(metadata_factory, tmp_path, n, barrier)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    tags = [t for repo in ("repo0", "repo1", "repo2") for t in parent.list_tags(repo, None, None)]
    assert len(tags) == 48
    assert parent.list_tags("shared", None, None) == ["latest"]


def test_one_store_shared_by_threads(tmp_path: Path, metadata_factory: MetadataFactory) -> None:
    """Async callers run store methods through asyncio.to_thread: one instance, many threads at once."""
    store = metadata_factory(tmp_path)

    def work(n: int) -> None:
        for i in range(4):
            rec = image(store, "threads", f"{n}-{i}", tag=f"t{n}-{i}")
            got = store.get_manifest("threads", f"t{n}-{i}")
            assert got is not None and got.digest == rec.digest

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))
    assert len(store.list_tags("threads", None, None)) == 32

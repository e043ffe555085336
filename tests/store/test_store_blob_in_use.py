"""``unlink_blob`` refuses a blob a manifest of the repository uses (BlobReferenced, in the unlink's own
write transaction); ``force=True`` unlinks anyway (tests that simulate a lost blob); other repositories'
manifests do not hold a repository's link."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.oci import digest_of
from lamina.store import BlobReferenced, ManifestRecord, ManifestReference, open_storage


def test_unlink_refuses_a_blob_in_use(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    try:
        metadata = storage.metadata
        used, spare = digest_of(b"config"), digest_of(b"spare")
        for repo in ("a", "b"):
            metadata.link_blob(repo, used, 6)
        metadata.link_blob("a", spare, 5)
        body = b'{"schemaVersion": 2}'
        record = ManifestRecord(repository="a", digest=digest_of(body), media_type="application/json",
                                content=body, kind="image", artifact_type=None, subject=None,
                                annotations_json=None, pushed_at=1.0, last_pulled_at=None)
        metadata.put_manifest(record, [ManifestReference(used, 6)], "v1")
        with pytest.raises(BlobReferenced) as refused:
            metadata.unlink_blob("a", used)
        assert refused.value.manifest == digest_of(body)
        assert str(refused.value) == f"blob {used} is used by manifest {digest_of(body)} in a"
        assert metadata.linked_blob_size("a", used) == 6
        assert metadata.unlink_blob("b", used)  # b has no manifest using it
        assert metadata.unlink_blob("a", spare) and not metadata.unlink_blob("a", spare)
        assert metadata.unlink_blob("a", used, force=True)
        assert metadata.linked_blob_size("a", used) is None
        assert metadata.delete_manifest("a", digest_of(body))
    finally:
        storage.close()

"""Records and pushes shared by the role suites (imported by name: this folder is on sys.path)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from store_helpers import blob_digest

from lamina.oci import Digest
from lamina.store import BlobUnknown, ManifestRecord, ManifestReference, MetadataStore, Storage, open_storage

MetadataFactory = Callable[[Path], MetadataStore]
IMAGE = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
HOUR = 3600.0


def record(repository: str, content: bytes, *, pushed_at: float | None = None, media_type: str = IMAGE,
           subject: Digest | None = None) -> ManifestRecord:
    return ManifestRecord(repository, blob_digest(content), media_type, content, "image", None, subject, None,
                          time.time() if pushed_at is None else pushed_at, None)


def storage_on(root: Path, metadata: MetadataStore) -> Storage:
    """A root's blob store with ``metadata`` (any backend) as its metadata: what a registry opens."""
    storage = open_storage(root)
    storage.metadata.close()
    storage.metadata = metadata
    return storage


def push_blob(storage: Storage, repository: str, data: bytes) -> ManifestReference:
    """Store and link a blob as the registry does: the file's presence checked inside the link's
    transaction (garbage collection deletes files under the same lock); stored again if GC took it."""
    digest = blob_digest(data)
    for _ in range(20):
        storage.blobs.put(digest, data)
        try:
            storage.metadata.link_blob(repository, digest, len(data), lambda: storage.blobs.size(digest) is not None)
            return ManifestReference(digest, len(data))
        except BlobUnknown:
            continue
    raise AssertionError(f"blob {digest} kept vanishing")


def push_image(storage: Storage, repository: str, name: str, tag: str | None, *,
               pushed_at: float | None = None) -> ManifestRecord:
    refs = [push_blob(storage, repository, f"config {name}".encode()),
            push_blob(storage, repository, f"layer {name}".encode())]
    rec = record(repository, json.dumps({"image": name, "refs": [str(r.digest) for r in refs]}).encode(),
                 pushed_at=pushed_at)
    storage.metadata.put_manifest(rec, refs, tag)
    return rec

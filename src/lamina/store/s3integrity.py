"""fsck's and verification on read's repairs for blobs kept as S3 objects (``blobs = "s3://..."``).

The S3 side of :class:`lamina.store.integrity.BlobPlace`, with the same guarantees as the files'
(:mod:`lamina.store.integrity`): every repair runs inside the metadata store's exclusive write
transaction (the GC gate that pushes take shared before they link a blob, see
:mod:`lamina.store.roles`), and its callback re-checks the object there:

- a corrupt blob is quarantined only while the object is still the one that was hashed: its identity
  (ETag, size, ``LastModified``; :func:`lamina.store.s3blobs.object_identity`) is compared after a
  HEAD, and the server-side copy into quarantine is conditional on that ETag
  (``x-amz-copy-source-if-match``), so an object a fresh push replaced in between is never moved; then
  the original is deleted and its links dropped in the same transaction. A push committing the same
  digest meanwhile links only after the transaction, finds the object gone (its ``present`` check)
  and fails, and its client pushes again;
- a link is dropped only while the object is still missing, a size fixed only while the object is the
  verified one, a reference relinked only while the object has the size the manifest declares.

Replicas share no root, so the quarantine is in the bucket: ``PREFIX/quarantine/UTCTIME-blob-ALG-HEX``
(a copy of the object) or ``UTCTIME-manifest-REPO-ALG-HEX`` (a manifest's bytes), each beside a
``.json`` note as under a root (what, why, when, where from, which repositories it was unlinked from).
Nothing under ``quarantine/`` is read, collected or listed by the registry; remove it by hand.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

from lamina.oci import Digest, parse_digest

from .filesystem import FileIdentity
from .roles import Repairs, VerificationRecords
from .s3blobs import S3BlobStore, object_identity
from .s3client import content_md5, is_missing, is_precondition_failed

__all__ = ["COPY_LIMIT", "S3BlobPlace"]

COPY_LIMIT = 5 << 30  # S3's largest CopyObject; bigger objects are copied in parts (UploadPartCopy)
COPY_PART = 1 << 30


class S3BlobPlace:
    """Blob objects in S3, quarantined under ``PREFIX/quarantine/`` in the same bucket (blocking calls)."""

    def __init__(self, blobs: S3BlobStore) -> None:
        self.blobs = blobs
        self.location = blobs.location

    @property
    def s3(self) -> Any:
        return self.blobs.client.s3

    def url(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    # -- quarantine objects ----------------------------------------------------------------------------

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.location.bucket, Key=key)
        except Exception as exc:
            if is_missing(exc):
                return False
            raise
        return True

    def _target(self, what: str, name: str) -> str:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        key = self.location.key("quarantine", f"{stamp}-{what}-{name}")
        counter, base = 1, key
        while self._exists(key) or self._exists(key + ".json"):
            key = f"{base}.{counter}"
            counter += 1
        return key

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        self.s3.put_object(Bucket=self.location.bucket, Key=key, Body=data, ContentMD5=content_md5(data),
                           ContentType=content_type)

    def _write_note(self, key: str, note: dict[str, Any]) -> None:
        note = {"quarantined_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **note}
        data = (json.dumps(note, indent=2, sort_keys=True) + "\n").encode()
        self._put(key + ".json", data, "application/json")

    def _etag_if_same(self, digest: Digest, identity: FileIdentity) -> str | None:
        """The object's ETag while it is still the one with ``identity``; None when gone or replaced."""
        try:
            head = self.s3.head_object(Bucket=self.location.bucket, Key=self.blobs.key(digest))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        etag = str(head["ETag"])
        if object_identity(etag, int(head["ContentLength"]), head["LastModified"]) != identity:
            return None
        return etag

    def _copy_if_match(self, source: str, target: str, size: int, etag: str) -> None:
        """Server-side copy of ``source`` as it is with ``etag`` (a precondition error when it is not)."""
        bucket = self.location.bucket
        copy_source = {"Bucket": bucket, "Key": source}
        if size <= COPY_LIMIT:
            self.s3.copy_object(Bucket=bucket, Key=target, CopySource=copy_source, CopySourceIfMatch=etag,
                                MetadataDirective="COPY")
            return
        upload_id = self.s3.create_multipart_upload(Bucket=bucket, Key=target)["UploadId"]
        try:
            parts = []
            for number, first in enumerate(range(0, size, COPY_PART), start=1):
                last = min(size, first + COPY_PART) - 1
                done = self.s3.upload_part_copy(
                    Bucket=bucket, Key=target, UploadId=upload_id, PartNumber=number, CopySource=copy_source,
                    CopySourceRange=f"bytes={first}-{last}", CopySourceIfMatch=etag,
                )
                parts.append({"PartNumber": number, "ETag": done["CopyPartResult"]["ETag"]})
            self.s3.complete_multipart_upload(Bucket=bucket, Key=target, UploadId=upload_id,
                                              MultipartUpload={"Parts": parts})
        except BaseException:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=target, UploadId=upload_id)
            raise

    # -- the repairs (BlobPlace) -----------------------------------------------------------------------

    def quarantine_blob(self, repairs: Repairs, digest: Digest, identity: FileIdentity, reason: str,
                        details: dict[str, Any] | None = None) -> str | None:
        """Copy the object into quarantine, delete it and drop every link to it, in one write transaction;
        None (nothing done) when it is gone or no longer the object with ``identity``."""
        source = self.blobs.key(digest)
        moved: list[str] = []

        def move() -> bool:
            etag = self._etag_if_same(digest, identity)
            if etag is None:
                return False
            target = self._target("blob", f"{digest.algorithm}-{digest.encoded}")
            try:
                self._copy_if_match(source, target, identity.size, etag)
            except Exception as exc:
                if is_precondition_failed(exc) or is_missing(exc):
                    return False  # replaced or deleted since the HEAD: not ours to move
                raise
            self.s3.delete_object(Bucket=self.location.bucket, Key=source)
            moved.append(target)
            return True

        linked = repairs.drop_blob_links(digest, move)
        if linked is None:
            return None
        self._write_note(moved[-1], {"what": "blob", "digest": str(digest), "reason": reason,
                                     "original_key": self.url(source), "size": identity.size,
                                     "unlinked_from": linked, **(details or {})})
        return self.url(moved[-1])

    def drop_links(self, repairs: Repairs, digest: Digest) -> list[str]:
        """Drop every link to a blob whose object is missing (checked under the write lock)."""
        return repairs.drop_blob_links(digest, lambda: self.blobs.size(digest) is None) or []

    def fix_link_size(self, repairs: Repairs, digest: Digest, identity: FileIdentity) -> int:
        return repairs.fix_link_size(digest, identity.size, lambda: self.blobs.identity(digest) == identity)

    def relink(self, repairs: Repairs, repository: str, manifest: str, digest: Digest, size: int) -> bool:
        return repairs.relink(repository, manifest, digest, size, lambda: self.blobs.size(digest) == size)

    def quarantine_manifest(self, repairs: Repairs, repository: str, digest: str, reason: str) -> str | None:
        """Keep a manifest's bytes (which no longer hash to ``digest``) in quarantine and delete it with
        its tags and references; None when it is gone or now hashes right."""
        algorithm = digest.partition(":")[0]
        written: list[tuple[str, str, list[str]]] = []

        def keep_aside(content: bytes, tag_names: list[str]) -> bool:
            actual = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
            if actual == digest:
                return False
            target = self._target("manifest", f"{repository.replace('/', '_')}-{digest.replace(':', '-')}")
            self._put(target, content, "application/octet-stream")
            written.append((target, actual, tag_names))
            return True

        if not repairs.remove_manifest(repository, digest, keep_aside):
            return None
        target, actual, tag_names = written[-1]
        self._write_note(target, {"what": "manifest", "repository": repository, "digest": digest,
                                  "actual": actual, "tags": tag_names, "reason": reason})
        return self.url(target)

    def forget_stale_checks(self, records: VerificationRecords) -> int:
        """Drop the verification records of blobs whose object is gone (one listing, then a HEAD for each
        record the listing does not show, under the write lock)."""
        listed = {str(digest) for digest in self.blobs.iter_digests()}
        return records.forget_checks(
            lambda digest: digest not in listed and self.blobs.size(parse_digest(digest)) is None
        )

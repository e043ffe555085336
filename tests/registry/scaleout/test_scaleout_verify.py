"""``verify_on_read`` on blobs streamed from a real Ceph RGW (``redirect=false``) with PostgreSQL metadata:
the first whole GET records the object as verified (``blob_checks``, keyed by its ETag, size and
``LastModified``); a range GET of an object not verified re-hashes it first; an object whose bytes were
replaced behind the registry's back is quarantined inside the bucket and answered ``404 BLOB_UNKNOWN``,
before the first byte for a range and from the next GET on for a whole read (which breaks off)."""

from __future__ import annotations

import json
import os

import pytest
import requests
from cluster import Cluster, MakeCluster
from scaletools import push_blob, sha256

from helpers.ceph import CephRgw
from lamina.oci import parse_digest
from lamina.store.postgres import PostgresMetadataStore
from lamina.store.s3blobs import S3BlobStore
from lamina.store.s3client import S3Client, parse_s3_url

MiB = 1 << 20


def _verified(cluster: Cluster, digest: str) -> bool:
    """Whether the database holds a verification record for the object as it is now."""
    identity = S3BlobStore(S3Client(parse_s3_url(cluster.blobs))).identity(parse_digest(digest))
    assert identity is not None
    store = PostgresMetadataStore(cluster.metadata)
    try:
        return store.is_verified(parse_digest(digest), (identity.inode, identity.size, identity.mtime_ns,
                                                        identity.ctime_ns))
    finally:
        store.close()


def _replace(cluster: Cluster, s3: object, digest: str, data: bytes) -> None:
    location = parse_s3_url(cluster.blobs)
    algorithm, _, encoded = digest.partition(":")
    s3.put_object(Bucket=location.bucket, Key=location.key("blobs", algorithm, encoded), Body=data)  # type: ignore[attr-defined]


def _quarantined(cluster: Cluster, s3: object, digest: str) -> dict[str, object]:
    """The quarantine note of ``digest`` (exactly one)."""
    location = parse_s3_url(cluster.blobs)
    listed = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.key("quarantine") + "/")  # type: ignore[attr-defined]
    notes = [item["Key"] for item in listed.get("Contents", ())
             if item["Key"].endswith(f"-blob-sha256-{digest[7:]}.json")]
    assert len(notes) == 1, listed.get("Contents")
    return dict(json.loads(s3.get_object(Bucket=location.bucket, Key=notes[0])["Body"].read()))  # type: ignore[attr-defined]


def test_first_streamed_get_verifies_records_and_quarantines(
    make_cluster: MakeCluster, ceph_rgw: CephRgw
) -> None:
    cluster = make_cluster(replicas=1, redirect=False)
    base = cluster.replicas[0].url
    s3 = ceph_rgw.client()
    kept, ranged, whole = (os.urandom(3 * MiB + n) for n in (1, 2, 3))
    for blob in (kept, ranged, whole):
        push_blob(base, "apps/verify", blob)

    # the first whole GET hashes as it streams and records the object; a later change is a new identity
    assert not _verified(cluster, sha256(kept))
    got = requests.get(f"{base}/v2/apps/verify/blobs/{sha256(kept)}", timeout=60, allow_redirects=False)
    assert got.status_code == 200 and got.content == kept
    assert _verified(cluster, sha256(kept))
    part = requests.get(f"{base}/v2/apps/verify/blobs/{sha256(kept)}", headers={"Range": "bytes=5-9"}, timeout=30)
    assert part.status_code == 206 and part.content == kept[5:10]

    # a range GET of an object never verified re-hashes it whole first: 404 before any byte
    other = os.urandom(len(ranged))
    _replace(cluster, s3, sha256(ranged), other)
    refused = requests.get(f"{base}/v2/apps/verify/blobs/{sha256(ranged)}", headers={"Range": "bytes=0-99"},
                           timeout=60)
    assert refused.status_code == 404, refused.text
    error = refused.json()["errors"][0]
    assert error["code"] == "BLOB_UNKNOWN" and error["detail"] == {"digest": sha256(ranged), "quarantined": True}
    assert f"its stored bytes hash to {sha256(other)}" in error["message"] and "push it again" in error["message"]
    note = _quarantined(cluster, s3, sha256(ranged))
    assert note["actual"] == sha256(other) and note["unlinked_from"] == ["apps/verify"]
    assert str(note["reason"]).startswith("verification on read:")

    # a whole GET of a replaced object breaks off before its last piece; the object is quarantined
    _replace(cluster, s3, sha256(whole), os.urandom(len(whole)))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # fewer bytes than Content-Length
        requests.get(f"{base}/v2/apps/verify/blobs/{sha256(whole)}", timeout=60)
    again = requests.get(f"{base}/v2/apps/verify/blobs/{sha256(whole)}", timeout=30)
    assert again.status_code == 404 and again.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert _quarantined(cluster, s3, sha256(whole))["unlinked_from"] == ["apps/verify"]

    # the verified object replaced afterwards: its record no longer matches, the range GET re-hashes
    _replace(cluster, s3, sha256(kept), os.urandom(len(kept)))
    stale = requests.get(f"{base}/v2/apps/verify/blobs/{sha256(kept)}", headers={"Range": "bytes=5-9"}, timeout=60)
    assert stale.status_code == 404 and stale.json()["errors"][0]["detail"]["quarantined"] is True


def test_verify_on_read_off_quarantines_nothing(make_cluster: MakeCluster, ceph_rgw: CephRgw) -> None:
    """``"off"``: the store still withholds the last piece of a whole read that does not hash right, but
    nothing is re-hashed first, recorded or quarantined."""
    cluster = make_cluster(replicas=1, redirect=False, extra='verify_on_read = "off"\n')
    base = cluster.replicas[0].url
    blob = os.urandom(2 * MiB)
    push_blob(base, "apps/off", blob)
    assert requests.get(f"{base}/v2/apps/off/blobs/{sha256(blob)}", timeout=60).content == blob
    assert not _verified(cluster, sha256(blob))
    other = os.urandom(len(blob))
    _replace(cluster, ceph_rgw.client(), sha256(blob), other)
    part = requests.get(f"{base}/v2/apps/off/blobs/{sha256(blob)}", headers={"Range": "bytes=0-9"}, timeout=30)
    assert part.status_code == 206 and part.content == other[:10]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # broken off before its last piece
        requests.get(f"{base}/v2/apps/off/blobs/{sha256(blob)}", timeout=60)
    assert requests.head(f"{base}/v2/apps/off/blobs/{sha256(blob)}", timeout=10).status_code == 200

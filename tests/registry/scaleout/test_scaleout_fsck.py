"""``lamina registry fsck [--repair]`` on a registry whose blobs are in a real Ceph RGW and whose metadata
is in PostgreSQL (both started by the repository's scripts): a clean registry is clean; objects corrupted
or deleted behind the registry's back (other bytes put with botocore) are found, named with the manifests
and tags they affect, left alone without ``--repair`` and, with it, quarantined inside the bucket and
unlinked as docs/registry.md promises; pushing the image again heals the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from cluster import Cluster, MakeCluster
from scaletools import push_image, sha256

from helpers.ceph import CephRgw
from lamina.store.s3client import parse_s3_url

MiB = 1 << 20


def fsck(cluster: Cluster, root: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Run the command as an operator would: exit status, the JSON report, stderr."""
    argv = [sys.executable, "-m", "lamina.cli", "registry", "fsck", "--config", str(cluster.config_file()),
            "--root", str(root), "--json", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def blob_key(cluster: Cluster, digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return parse_s3_url(cluster.blobs).key("blobs", algorithm, encoded)


def test_fsck_finds_and_repairs_objects_changed_behind_the_registry(
    make_cluster: MakeCluster, ceph_rgw: CephRgw, tmp_path: Path
) -> None:
    cluster = make_cluster(replicas=1, redirect=True)
    replica = cluster.replicas[0]
    bucket = parse_s3_url(cluster.blobs).bucket
    s3 = ceph_rgw.client()
    good, corrupt, lost = os.urandom(6 * MiB + 3), os.urandom(1 * MiB), b"a layer that goes missing"
    web = push_image(replica.url, "apps/web", "v1", [good, corrupt])
    api = push_image(replica.url, "apps/api", "v1", [lost])
    root = tmp_path / "fsck-root"

    status, report, progress = fsck(cluster, root)
    assert status == 0 and report["clean"] and report["problems"] == [], report
    assert report["blobs_checked"] == 5 and report["manifests_checked"] == 2 and report["repositories"] == 2
    assert "fsck: re-hashing 5 blob(s)" in progress

    # behind the registry's back: other bytes (same size) under one blob's key, another object deleted
    other = os.urandom(len(corrupt))
    s3.put_object(Bucket=bucket, Key=blob_key(cluster, sha256(corrupt)), Body=other)
    s3.delete_object(Bucket=bucket, Key=blob_key(cluster, sha256(lost)))
    # redirect=true: the registry never reads the bytes it redirects to, so only fsck can see this
    redirected = requests.get(f"{replica.url}/v2/apps/web/blobs/{sha256(corrupt)}", timeout=30)
    assert redirected.status_code == 200 and redirected.content == other

    status, report, _ = fsck(cluster, root)
    assert status == 1 and not report["clean"]
    found = {problem["kind"]: problem for problem in report["problems"]}
    assert sorted(found) == ["corrupt-blob", "missing-blob"], report["problems"]
    assert found["corrupt-blob"]["subject"] == sha256(corrupt)
    assert found["corrupt-blob"]["message"] == f"the {len(other)} stored bytes hash to {sha256(other)}"
    assert found["corrupt-blob"]["affects"] == [{"repository": "apps/web", "manifest": web, "tags": ["v1"]}]
    assert found["missing-blob"]["subject"] == sha256(lost)
    assert found["missing-blob"]["affects"] == [{"repository": "apps/api", "manifest": api, "tags": ["v1"]}]
    assert all(problem["repair"] is None for problem in report["problems"])
    # read-only: the object is where it was and still linked
    assert s3.get_object(Bucket=bucket, Key=blob_key(cluster, sha256(corrupt)))["Body"].read() == other
    assert requests.head(f"{replica.url}/v2/apps/web/blobs/{sha256(corrupt)}", timeout=10).status_code == 200

    status, report, _ = fsck(cluster, root, "--repair")
    assert status == 1
    repaired = {problem["kind"]: problem["repair"] for problem in report["problems"]}
    prefix = f"s3://{bucket}/{parse_s3_url(cluster.blobs).key('quarantine')}/"
    assert repaired["corrupt-blob"].startswith(f"quarantined to {prefix}"), repaired
    assert repaired["corrupt-blob"].endswith(f"-blob-sha256-{sha256(corrupt)[7:]}; push it again")
    assert repaired["missing-blob"] == "dropped its link(s) from apps/api; push it again"
    quarantined = repaired["corrupt-blob"].removeprefix("quarantined to ").removesuffix("; push it again")
    key = quarantined.removeprefix(f"s3://{bucket}/")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == other
    note = json.loads(s3.get_object(Bucket=bucket, Key=key + ".json")["Body"].read())
    assert note["what"] == "blob" and note["digest"] == sha256(corrupt) and note["actual"] == sha256(other)
    assert note["unlinked_from"] == ["apps/web"] and note["affects"] == [f"apps/web@{web} (tags: v1)"]
    assert note["original_key"] == f"s3://{bucket}/{blob_key(cluster, sha256(corrupt))}"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=blob_key(cluster, sha256(corrupt)))
    for name, digest in (("apps/web", sha256(corrupt)), ("apps/api", sha256(lost))):
        gone = requests.get(f"{replica.url}/v2/{name}/blobs/{digest}", timeout=10, allow_redirects=False)
        assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert requests.get(f"{replica.url}/v2/apps/web/blobs/{sha256(good)}", timeout=30).content == good

    # the manifests stay (reported as missing their blob) until the images are pushed again
    status, report, _ = fsck(cluster, root)
    assert status == 1 and {p["kind"] for p in report["problems"]} == {"missing-blob"}
    assert push_image(replica.url, "apps/web", "v1", [good, corrupt]) == web
    assert push_image(replica.url, "apps/api", "v1", [lost]) == api
    status, report, _ = fsck(cluster, root)
    assert status == 0 and report["clean"] and report["blobs_checked"] == 5, report
    assert requests.get(f"{replica.url}/v2/apps/web/blobs/{sha256(corrupt)}", timeout=30).content == corrupt


def test_fsck_on_a_clean_registry_repairs_nothing(make_cluster: MakeCluster, tmp_path: Path) -> None:
    """--repair on a clean registry changes nothing and drops the verification record of a blob whose
    object is gone (collected meanwhile)."""
    from lamina.oci import parse_digest
    from lamina.store.postgres import PostgresMetadataStore

    cluster = make_cluster(replicas=1)
    replica = cluster.replicas[0]
    layer = os.urandom(2 * MiB)
    push_image(replica.url, "apps/clean", "v1", [layer])
    got = requests.get(f"{replica.url}/v2/apps/clean/blobs/{sha256(layer)}", timeout=30)  # streamed: recorded
    assert got.status_code == 200 and got.content == layer
    store = PostgresMetadataStore(cluster.metadata)
    try:
        store.record_verified(parse_digest(sha256(b"collected long ago")), (1, 2, 3, 0))
        status, report, _ = fsck(cluster, tmp_path / "root", "--repair")
        assert status == 0 and report["clean"] and report["stale_checks_dropped"] == 1, report
        assert not store.is_verified(parse_digest(sha256(b"collected long ago")), (1, 2, 3, 0))
    finally:
        store.close()
    assert requests.get(f"{replica.url}/v2/apps/clean/blobs/{sha256(layer)}", timeout=30).content == layer

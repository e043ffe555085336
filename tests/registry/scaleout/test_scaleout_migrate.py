"""``lamina registry migrate --from ROOT --to CONFIG``: an embedded registry (SQLite + files) populated
over HTTP — images, an index, tags, a referrer, BuildKit caches, immutable tags — copied into PostgreSQL
+ a real Ceph RGW, then served by a replica on them; an interrupted migrate resumes; a foreign target is
refused."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cluster import MakeCluster
from scaletools import OCI_MANIFEST, manifests_missing_blobs, push_blob, push_image, sha256

from helpers.buildkit_cache import buildkit_cache
from helpers.registries import RegistryProcess, start_lamina

MiB = 1 << 20
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMMUTABLE = '[[immutable_tags]]\nrepositories = ["apps/**"]\n'
ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.list.v2+json"}


@dataclass
class Populated:
    manifests: dict[tuple[str, str], str] = field(default_factory=dict)  # (repository, reference) -> digest
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repository, digest) -> bytes
    referrer: tuple[str, str, str] = ("", "", "")  # repository, subject, referrer digest


def _put(base: str, name: str, reference: str, body: bytes, media_type: str) -> str:
    done = requests.put(f"{base}/v2/{name}/manifests/{reference}", data=body, timeout=30,
                        headers={"Content-Type": media_type})
    assert done.status_code == 201, done.text
    return sha256(body)


def populate(server: RegistryProcess) -> Populated:
    base, found = server.url, Populated()
    big = os.urandom(6 * MiB + 5)  # more than one S3 part
    for tag, layers in (("v1", [b"web layer one"]), ("v2", [b"web layer two", big])):
        digest = push_image(base, "apps/web", tag, layers)
        found.manifests[("apps/web", tag)] = digest
        for layer in layers:
            found.blobs[("apps/web", sha256(layer))] = layer
    found.manifests[("apps/web", "latest")] = _put(
        base, "apps/web", "latest", requests.get(f"{base}/v2/apps/web/manifests/v2", headers=ACCEPT,
                                                 timeout=10).content, OCI_MANIFEST)
    children = [push_image(base, "apps/multi", None, [f"{arch} layer".encode()]) for arch in ("amd64", "arm64")]
    entries = []
    for child, arch in zip(children, ("amd64", "arm64"), strict=True):
        size = len(requests.get(f"{base}/v2/apps/multi/manifests/{child}", headers=ACCEPT, timeout=10).content)
        entries.append({"mediaType": OCI_MANIFEST, "digest": child, "size": size,
                        "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    found.manifests[("apps/multi", "multi")] = _put(base, "apps/multi", "multi", index, OCI_INDEX)
    for child in children:
        found.manifests[("apps/multi", child)] = child
    subject = found.manifests[("apps/web", "v1")]
    empty = b"{}"
    push_blob(base, "apps/web", empty)
    signature = b"a signature"
    push_blob(base, "apps/web", signature)
    referrer = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256(signature), "size": len(signature)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(requests.get(
            f"{base}/v2/apps/web/manifests/v1", headers=ACCEPT, timeout=10).content)},
    }).encode()
    found.referrer = ("apps/web", subject, _put(base, "apps/web", sha256(referrer), referrer, OCI_MANIFEST))
    cache = buildkit_cache()
    for blob in cache.blobs():
        push_blob(base, "cache/app", blob.data)
        found.blobs[("cache/app", blob.digest)] = blob.data
    for tag, manifest in (("cache", cache.image_manifest), ("cache-legacy", cache.legacy_oci_index)):
        found.manifests[("cache/app", tag)] = _put(base, "cache/app", tag, manifest.data, manifest.media_type)
    return found


def migrate(source: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lamina.cli", "registry", "migrate", "--from", str(source), "--to", str(config),
            *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def check_served(replica: RegistryProcess, populated: Populated, metadata: str) -> None:
    for (repository, reference), digest in populated.manifests.items():
        got = requests.get(f"{replica.url}/v2/{repository}/manifests/{reference}", headers=ACCEPT, timeout=10)
        assert got.status_code == 200 and sha256(got.content) == digest, (repository, reference, got.status_code)
    for (repository, digest), data in populated.blobs.items():
        got = requests.get(f"{replica.url}/v2/{repository}/blobs/{digest}", timeout=60)
        assert got.status_code == 200 and got.content == data, (repository, digest)
    tags = requests.get(f"{replica.url}/v2/apps/web/tags/list", timeout=10).json()["tags"]
    assert sorted(tags) == ["latest", "v1", "v2"]
    repository, subject, referrer = populated.referrer
    listed = requests.get(f"{replica.url}/v2/{repository}/referrers/{subject}", timeout=10).json()["manifests"]
    assert [entry["digest"] for entry in listed] == [referrer]
    assert listed[0]["artifactType"] == "application/vnd.example.sig"
    checked, problems = manifests_missing_blobs(metadata, replica.url)
    assert checked == 8 and not problems, problems


def test_migrate_moves_a_populated_registry(make_cluster: MakeCluster, tmp_path: Path) -> None:
    source = start_lamina(tmp_path / "embedded", config=IMMUTABLE)
    try:
        populated = populate(source)
    finally:
        source.stop()
    cluster = make_cluster(replicas=0, extra=IMMUTABLE)
    done = migrate(source.root, cluster.config_file())
    assert done.returncode == 0, done.stderr + done.stdout
    summary = done.stdout.strip().splitlines()[-1]
    assert "every digest verified" in summary and "manifests: 8 copied" in summary and "tags: 6 set" in summary, summary
    assert re.search(r"blobs: \d+ copied", summary) and "blob 1/" in done.stderr
    replica = cluster.start_replica()
    check_served(replica, populated, cluster.metadata)
    other = push_image(replica.url, "scratch/other", "x", [b"another image"])
    moved = requests.put(f"{replica.url}/v2/apps/web/manifests/v1", timeout=10, headers={"Content-Type": OCI_MANIFEST},
                         data=requests.get(f"{replica.url}/v2/scratch/other/manifests/{other}", headers=ACCEPT,
                                           timeout=10).content)
    assert moved.status_code in (400, 403) and moved.json()["errors"][0]["code"] in ("DENIED", "MANIFEST_BLOB_UNKNOWN")
    again = migrate(source.root, cluster.config_file())  # nothing left to do
    assert again.returncode == 0, again.stderr
    assert "blobs: 0 copied" in again.stdout and "manifests: 0 copied, 8 already there" in again.stdout, again.stdout
    fsck = subprocess.run([sys.executable, "-m", "lamina.cli", "registry", "fsck", "--config",
                           str(cluster.config_file()), "--root", str(tmp_path / "fsck-root")],
                          capture_output=True, text=True, timeout=300)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    summary = fsck.stdout.splitlines()[-1]  # the 19 migrated blobs and 8 manifests, and scratch/other's 2 and 1
    assert "fsck: 21 blob(s) re-hashed" in summary and "9 manifest(s) in 4 repositor(ies): no problems" in summary


def test_interrupted_migrate_resumes(make_cluster: MakeCluster, tmp_path: Path) -> None:
    source = start_lamina(tmp_path / "embedded")
    layers = [os.urandom(256 * 1024 + n) for n in range(24)]
    try:
        digest = push_image(source.url, "many/layers", "v1", layers)
    finally:
        source.stop()
    cluster = make_cluster(replicas=0)
    argv = [sys.executable, "-m", "lamina.cli", "registry", "migrate", "--from", str(source.root),
            "--to", str(cluster.config_file()), "--parallel", "1"]
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert first.stderr is not None
    copied = 0
    for line in first.stderr:
        if " copied (" in line:
            copied += 1
            if copied == 5:
                first.send_signal(signal.SIGKILL)
                break
    first.wait(30)
    assert copied == 5 and first.returncode == -signal.SIGKILL
    resumed = migrate(source.root, cluster.config_file())
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing the migrate of" in resumed.stderr
    found = re.search(r"blobs: (\d+) copied \([^)]*\), (\d+) already there", resumed.stdout)
    assert found, resumed.stdout
    assert int(found.group(2)) >= 5 and int(found.group(1)) + int(found.group(2)) == 25, resumed.stdout
    replica = cluster.start_replica()
    got = requests.get(f"{replica.url}/v2/many/layers/manifests/v1", headers=ACCEPT, timeout=10)
    assert got.status_code == 200 and sha256(got.content) == digest
    checked, problems = manifests_missing_blobs(cluster.metadata, replica.url)
    assert checked == 1 and not problems, problems


def test_migrate_refuses_a_target_holding_another_registry(make_cluster: MakeCluster, tmp_path: Path) -> None:
    source = start_lamina(tmp_path / "embedded")
    try:
        push_image(source.url, "mine/app", "v1", [b"mine"])
    finally:
        source.stop()
    cluster = make_cluster(replicas=1)
    push_image(cluster.replicas[0].url, "theirs/app", "v1", [b"theirs"])
    refused = migrate(source.root, cluster.config_file())
    assert refused.returncode == 2
    assert "already holds a registry lamina did not migrate here" in refused.stderr and "--force" in refused.stderr
    forced = migrate(source.root, cluster.config_file(), "--force")
    assert forced.returncode == 0, forced.stderr
    for name in ("mine/app", "theirs/app"):
        assert requests.get(f"{cluster.replicas[0].url}/v2/{name}/manifests/v1", headers=ACCEPT,
                            timeout=10).status_code == 200
    not_a_root = migrate(tmp_path / "nowhere", cluster.config_file())
    assert not_a_root.returncode == 2 and "not an embedded registry root" in not_a_root.stderr


def test_a_corrupt_source_blob_is_reported_and_never_copied(make_cluster: MakeCluster, tmp_path: Path) -> None:
    """A blob file whose bytes changed on disk: S3's commit re-hashes it and refuses it, the manifest using
    it cannot be stored without it, both are named, the exit status is 1; the rest is copied."""
    source = start_lamina(tmp_path / "embedded")
    bad_layer, good_layer = os.urandom(300_000), os.urandom(200_000)
    try:
        push_image(source.url, "corrupt/app", "bad", [bad_layer])
        good = push_image(source.url, "corrupt/other", "good", [good_layer])
    finally:
        source.stop()
    digest = sha256(bad_layer)
    path = source.root / "blobs" / "sha256" / digest[7:9] / digest[7:]
    path.chmod(0o644)
    path.write_bytes(b"x" * len(bad_layer))  # same size, other bytes: a disk that decayed
    cluster = make_cluster(replicas=0)
    done = migrate(source.root, cluster.config_file())
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert any(line.startswith(f"FAILED blob {digest}:") and "hash" in line for line in failed), failed
    assert any(line.startswith("FAILED manifest corrupt/app@") for line in failed), failed
    assert "2 FAILURE(S)" in done.stdout.splitlines()[-1]
    replica = cluster.start_replica()
    assert requests.get(f"{replica.url}/v2/corrupt/app/blobs/{digest}", timeout=10).status_code == 404
    got = requests.get(f"{replica.url}/v2/corrupt/other/manifests/good", headers=ACCEPT, timeout=10)
    assert got.status_code == 200 and sha256(got.content) == good

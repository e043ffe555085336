"""``/healthz`` of a replica on S3 asks the bucket too, so a load balancer takes a replica that lost its
blob store out of rotation (examples/replicas/haproxy.cfg checks it every 2 s)."""

from __future__ import annotations

from pathlib import Path

import requests

from helpers.ceph import CephRgw
from helpers.postgres import PostgresServer, scratch_database
from helpers.registries import start_lamina


def test_healthz_is_503_when_the_bucket_is_gone(
    tmp_path: Path, ceph_rgw: CephRgw, postgres_server: PostgresServer
) -> None:
    s3 = ceph_rgw.client()
    s3.create_bucket(Bucket="lamina-health")
    with scratch_database(postgres_server.url, drop=False) as metadata:
        blobs = f"s3://lamina-health/x?endpoint={ceph_rgw.endpoint}&region=default"
        replica = start_lamina(tmp_path, config=f'metadata = "{metadata}"\nblobs = "{blobs}"\nworkers = 1\n')
        try:
            assert requests.get(f"{replica.url}/healthz", timeout=10).json() == {"status": "ok"}
            s3.delete_bucket(Bucket="lamina-health")
            gone = requests.get(f"{replica.url}/healthz", timeout=30)
            assert gone.status_code == 503 and "S3 bucket 'lamina-health'" in gone.json()["problem"], gone.text
        finally:
            replica.stop()

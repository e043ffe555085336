"""Two ``lamina registry serve`` replicas on different ports sharing one PostgreSQL database and one S3
prefix on a real Ceph RADOS Gateway (both started by the repository's scripts, tests/helpers/pgfixture.py
and tests/helpers/ceph.py). Each replica has its own root, as it would on its own host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, MakeCluster

from helpers.ceph import CephRgw, s3_url
from helpers.postgres import PostgresServer, scratch_database


@pytest.fixture
def make_cluster(
    tmp_path: Path, postgres_server: PostgresServer, ceph_rgw: CephRgw
) -> Iterator[MakeCluster]:
    """``make_cluster(replicas=2, extra="...")``: a fresh database and S3 prefix, and replicas on them."""
    clusters: list[Cluster] = []
    with scratch_database(postgres_server.url, drop=False) as metadata:

        def make(replicas: int = 2, extra: str = "", redirect: bool = False) -> Cluster:
            assert not clusters, "one cluster per test (one database)"
            cluster = Cluster(tmp_path, metadata, s3_url(ceph_rgw, tmp_path, redirect=redirect), extra)
            clusters.append(cluster)
            for _ in range(replicas):
                cluster.start_replica()
            return cluster

        try:
            yield make
        finally:
            for cluster in clusters:
                for replica in cluster.replicas:
                    replica.stop()

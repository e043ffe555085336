"""Two ``lamina registry serve`` replicas on different ports sharing one PostgreSQL database and one S3
prefix on a real Ceph RADOS Gateway (both started by the repository's scripts, tests/helpers/pgfixture.py
and tests/helpers/ceph.py). Each replica has its own root, as it would on its own host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.ceph import CephRgw, s3_url
from helpers.postgres import PostgresServer, scratch_database
from helpers.registries import RegistryProcess, start_lamina


@dataclass
class Cluster:
    """The shared settings and the replicas started on them."""

    workdir: Path
    metadata: str  # postgresql://...
    blobs: str  # s3://...
    extra: str = ""
    replicas: list[RegistryProcess] = field(default_factory=list)

    @property
    def config(self) -> str:
        return f'metadata = "{self.metadata}"\nblobs = "{self.blobs}"\nworkers = 1\n{self.extra}'

    def config_file(self) -> Path:
        path = self.workdir / "shared.toml"
        path.write_text(self.config)
        return path

    def start_replica(self, extra: str = "") -> RegistryProcess:
        """Another replica: its own root and port, the same settings (plus ``extra`` lines)."""
        replica = start_lamina(self.workdir / f"replica-{len(self.replicas)}", config=self.config + extra)
        self.replicas.append(replica)
        return replica


MakeCluster = Callable[..., Cluster]


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

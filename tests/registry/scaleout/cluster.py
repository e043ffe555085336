"""The replicas of one scale-out test: shared settings (one PostgreSQL database, one S3 prefix) and the
``lamina registry serve`` processes started on them, each with its own root as on its own host."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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

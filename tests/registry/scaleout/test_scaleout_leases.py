"""Maintenance leases (lamina.store.leases): GC, lifecycle and upload expiry once at a time across every
process of a registry — a flock with SQLite, a session advisory lock with PostgreSQL (a real server)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg
import pytest
import requests
from cluster import MakeCluster

from helpers.postgres import PostgresServer, scratch_database
from lamina.store import open_storage
from lamina.store.leases import Lease, LeaseLost, job_key
from lamina.store.postgres import PostgresMetadataStore

Leases = Callable[[str], AbstractContextManager[Lease]]


@pytest.fixture(params=["sqlite", "postgresql"])
def leases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Leases, str]]:
    """(backend, a way to take a lease, a second store's URL or root) for each metadata backend."""
    if request.param == "sqlite":
        storage = open_storage(tmp_path / "root")
        yield "sqlite", storage.metadata.maintenance_lease, str(tmp_path / "root")
        storage.close()
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    with scratch_database(postgres.url, drop=False) as url:
        store = PostgresMetadataStore(url)
        yield "postgresql", store.maintenance_lease, url
        store.close()


def _second(backend: str, where: str) -> Leases:
    """The same registry opened again: another worker or replica."""
    if backend == "sqlite":
        return open_storage(Path(where)).metadata.maintenance_lease
    return PostgresMetadataStore(where).maintenance_lease


def test_one_holder_per_job_and_released_at_the_end(leases: tuple[str, Leases, str]) -> None:
    backend, take, where = leases
    other = _second(backend, where)
    with take("gc") as first:
        assert first.held
        first.check()
        with other("gc") as second:
            assert not second.held
            with pytest.raises(LeaseLost):
                second.check()
        with other("lifecycle") as different_job:  # jobs are independent
            assert different_job.held
    with other("gc") as again:
        assert again.held


def test_unknown_job_is_refused(leases: tuple[str, Leases, str]) -> None:
    _, take, _ = leases
    with pytest.raises(ValueError, match="unknown maintenance job 'backup'"), take("backup"):
        pass


_HOLDER = """
import sys, time
from lamina.store.postgres import PostgresMetadataStore
with PostgresMetadataStore(sys.argv[1]).maintenance_lease("gc") as lease:
    print("held" if lease.held else "busy", flush=True)
    time.sleep(60)
"""


def _wait_held(take: Leases, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with take("gc") as lease:
            if lease.held:
                return True
        time.sleep(0.1)
    return False


def test_postgresql_lease_expires_when_its_holder_is_killed(postgres_server: PostgresServer) -> None:
    """A replica killed with SIGKILL holds nothing: the server ends its session and frees the job."""
    with scratch_database(postgres_server.url, drop=False) as url:
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            store = PostgresMetadataStore(url)
            with store.maintenance_lease("gc") as lease:
                assert not lease.held
            holder.kill()
            holder.wait(10)
            assert _wait_held(store.maintenance_lease, 10.0)
            store.close()
        finally:
            holder.kill()
            holder.wait(10)


def test_postgresql_lease_lost_with_its_connection_is_fenced(postgres_server: PostgresServer) -> None:
    """The lock's connection ended under a running job (the server restarted it, a network cut):
    ``check()`` says so before the next batch of deletions, and another replica may take the job."""
    with scratch_database(postgres_server.url, drop=False) as url:
        store, other = PostgresMetadataStore(url), PostgresMetadataStore(url)
        key = job_key("gc")
        with store.maintenance_lease("gc") as lease:
            assert lease.held
            lease.check()
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND objid = (%s::bigint & 4294967295)::oid", (key,))
            with pytest.raises(LeaseLost, match="'gc' lost"):
                lease.check()
            assert _wait_held(other.maintenance_lease, 5.0)
        store.close()
        other.close()


def test_gc_command_reports_another_replica_holding_the_lease(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """``lamina registry gc`` on one host while a replica elsewhere collects: busy, exit 1, nothing done."""
    with scratch_database(postgres_server.url, drop=False) as url:
        config = tmp_path / "registry.toml"
        config.write_text(f'metadata = "{url}"\n')
        (tmp_path / "root").mkdir()
        argv = [sys.executable, "-m", "lamina.cli", "registry", "gc", "--config", str(config),
                "--root", str(tmp_path / "root")]
        store = PostgresMetadataStore(url)
        with store.maintenance_lease("gc") as lease:
            assert lease.held
            busy = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1, busy.stderr
        assert "another garbage collection is running on this registry" in busy.stderr
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "gc: 0 untagged manifest(s)" in done.stdout, done.stderr
        store.close()


def test_upload_expiry_and_lifecycle_wait_for_the_lease_holder(leases: tuple[str, Leases, str], tmp_path: Path) -> None:
    """A replica's janitor and lifecycle rounds do nothing while another process holds the job's lease."""
    from lamina.registry.janitor import expire_uploads_once
    from lamina.registry.lifecycle import LifecycleRule, LifecycleSettings, apply_lifecycle_once
    from lamina.store import UploadSession

    backend, take, where = leases
    replica = open_storage(tmp_path / "replica", metadata=where) if backend == "postgresql" else None
    storage = replica or open_storage(Path(where))  # SQLite: the same root, as another worker opens it
    old = time.time() - 7200
    storage.metadata.create_upload(UploadSession("0" * 32, "expiry/repo", 0, old, old))
    rules = LifecycleSettings((LifecycleRule(("**",), untagged_older_than_days=1.0),), 60.0)
    with take("uploads") as lease, take("lifecycle") as other:
        assert lease.held and other.held
        assert expire_uploads_once(storage, 3600.0) is None
        assert apply_lifecycle_once(storage, rules) is None
        assert storage.metadata.get_upload("0" * 32) is not None
    assert expire_uploads_once(storage, 3600.0) == 1
    assert storage.metadata.get_upload("0" * 32) is None
    result = apply_lifecycle_once(storage, rules)
    assert result is not None and result.expired == []
    storage.close()


def _gc_runs(replica_url: str) -> float:
    text = requests.get(f"{replica_url}/metrics", timeout=10).text
    found = re.search(r"^lamina_gc_runs_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_scheduled_gc_of_every_replica_waits_for_the_lease(make_cluster: MakeCluster) -> None:
    """Two replicas scheduling GC every 0.2 s: while another process holds the gc lease neither collects
    (each round skips); once it is released they collect again."""
    cluster = make_cluster(replicas=0, extra="[gc]\ninterval_seconds = 0.2\ngrace_seconds = 0\n")
    holder = PostgresMetadataStore(cluster.metadata)
    with holder.maintenance_lease("gc") as lease:
        assert lease.held
        replicas = [cluster.start_replica(), cluster.start_replica()]
        time.sleep(1.5)
        assert [_gc_runs(r.url) for r in replicas] == [0.0, 0.0]
    deadline = time.monotonic() + 15
    while sum(_gc_runs(r.url) for r in replicas) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(_gc_runs(r.url) for r in replicas) >= 2
    holder.close()

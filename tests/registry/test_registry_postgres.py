"""A registry on PostgreSQL metadata end to end: ``lamina registry serve`` (two workers) with
``metadata = "postgresql://..."`` against a real server (tests/helpers/pgfixture.py), then the operations
commands with the same config: what the server wrote is what ``gc``, ``fsck`` and a restarted server see,
and nothing of it is in ``root/metadata.db``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers.postgres import scratch_database
from helpers.registries import free_port, start_lamina
from lamina.cli import main
from lamina.oci import mediatypes as mt
from lamina.oci import parse_digest
from lamina.store import StorePaths


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(url: str, name: str, data: bytes) -> str:
    digest = _sha(data)
    started = requests.post(f"{url}/v2/{name}/blobs/uploads/", timeout=30)
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    location = location if location.startswith("http") else url + location
    done = requests.put(location, params={"digest": digest}, data=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert done.status_code == 201, done.text
    return digest


def _lamina(*argv: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def test_registry_on_postgres_serves_and_its_commands_share_the_database(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    postgres = request.getfixturevalue("postgres_server")
    with scratch_database(postgres.url, drop=False) as database:
        config_text = f'metadata = "{database}"\n'
        server = start_lamina(tmp_path / "server", config=config_text, workers=2)
        config = tmp_path / "server" / "config.toml"
        try:
            config_blob = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                                                        "diff_ids": []}}).encode()
            layer, orphan = b"layer bytes" * 100, b"pushed, never used"
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.OCI_CONFIG, "digest": _push_blob(server.url, "team/app", config_blob),
                           "size": len(config_blob)},
                "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": _push_blob(server.url, "team/app", layer),
                            "size": len(layer)}],
            }).encode()
            orphan_digest = _push_blob(server.url, "team/app", orphan)
            put = requests.put(f"{server.url}/v2/team/app/manifests/v1", data=manifest,
                               headers={"Content-Type": mt.OCI_MANIFEST}, timeout=30)
            assert put.status_code == 201, put.text
            for _ in range(4):  # each worker answers from the shared database
                got = requests.get(f"{server.url}/v2/team/app/manifests/v1", headers={"Accept": mt.OCI_MANIFEST},
                                   timeout=30)
                assert got.status_code == 200 and got.content == manifest
            assert requests.get(f"{server.url}/v2/_catalog", timeout=30).json() == {"repositories": ["team/app"]}
            assert requests.get(f"{server.url}/healthz", timeout=30).json() == {"status": "ok"}
            metrics = requests.get(f"{server.url}/metrics", timeout=30).text
            assert "lamina_repositories 1" in metrics and "lamina_manifests 1" in metrics
            assert not StorePaths(server.root).metadata_db.exists()  # nothing went to the embedded database

            server.stop()
            server.start()  # the data lives in PostgreSQL: a restarted server (or another replica) sees it
            assert requests.head(f"{server.url}/v2/team/app/blobs/{_sha(layer)}", timeout=30).status_code == 200

            gc = _lamina("registry", "gc", "--root", str(server.root), "--config", str(config), "--grace", "0")
            assert gc.returncode == 0, gc.stderr
            assert f"deleted blob {orphan_digest}" in gc.stdout
            assert requests.head(f"{server.url}/v2/team/app/blobs/{orphan_digest}", timeout=30).status_code == 404
            assert requests.head(f"{server.url}/v2/team/app/blobs/{_sha(layer)}", timeout=30).status_code == 200

            StorePaths(server.root).blob(parse_digest(_sha(layer))).unlink()  # a lost file: fsck must see it
            check = _lamina("registry", "fsck", "--root", str(server.root), "--config", str(config), "--json")
            assert check.returncode == 1, check.stderr
            problems = json.loads(check.stdout)["problems"]
            assert [(p["kind"], p["subject"]) for p in problems] == [("missing-blob", _sha(layer))]
            repaired = _lamina("registry", "fsck", "--root", str(server.root), "--config", str(config), "--repair")
            assert "dropped its link(s) from team/app" in repaired.stdout, repaired.stdout + repaired.stderr
            assert requests.head(f"{server.url}/v2/team/app/blobs/{_sha(layer)}", timeout=30).status_code == 404
        finally:
            server.stop()


def test_serve_refuses_an_unreachable_or_malformed_metadata_url_in_one_line(tmp_path: Path) -> None:
    closed = free_port()  # a loopback port nothing listens on
    cases = {f"postgresql://postgres@127.0.0.1:{closed}/registry": f"127.0.0.1:{closed}/registry: connection failed",
             "mysql://u@h/db": "is not a postgresql://USER@HOST:PORT/DB URL"}
    for url, expected in cases.items():
        config = tmp_path / "config.toml"
        config.write_text(f'metadata = "{url}"\n')
        argv = [sys.executable, "-m", "lamina.cli", "registry", "serve", "--root", str(tmp_path / "r"),
                "--config", str(config), "--listen", f"127.0.0.1:{free_port()}"]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and expected in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr

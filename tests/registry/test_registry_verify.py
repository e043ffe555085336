"""Verification on read (``verify_on_read``) and the janitor's temp sweep, on the real app over loopback.

A flipped byte in a stored blob is caught by the next GET ("first" after any change to the file,
"always" every time), the blob is quarantined and answered 404 BLOB_UNKNOWN, and a push heals it; with
"off" the corrupt bytes are served (which is why fsck exists). Old temp files go at start and on the
janitor's schedule; fresh ones (an atomic write in flight) stay."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from regtools import Client, error_code, push_blob, sha256

from lamina.oci import parse_digest
from lamina.registry.janitor import TMP_MAX_AGE_SECONDS, sweep_temp_files
from lamina.registry.verify import VERIFIER
from lamina.store import StorePaths, open_storage

MakeClient = Callable[..., Awaitable[Client]]  # tests/registry/conftest.py's make_client
LAYER = b"layer bytes " * 1000


def flip_byte(root: Path, digest: str) -> Path:
    path = StorePaths(root).blob(parse_digest(digest))
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x20
    path.write_bytes(bytes(data))
    path.chmod(0o400)
    return path


async def test_first_hashes_once_then_catches_a_flipped_byte(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_client(root=root, verify_on_read="first")
    verifier = client.server.app[VERIFIER]
    digest = await push_blob(client, "team/app", LAYER)
    for _ in range(3):
        response = await client.get(f"/v2/team/app/blobs/{digest}")
        assert response.status == 200 and await response.read() == LAYER
    assert verifier.hashed == 1  # the first GET re-hashed; the others trusted the unchanged file
    db = sqlite3.connect(root / "metadata.db")
    assert db.execute("SELECT count(*) FROM blob_checks WHERE digest = ?", (digest,)).fetchone() == (1,)
    db.close()
    flip_byte(root, digest)  # a write changes the file's identity: the next GET re-hashes
    response = await client.get(f"/v2/team/app/blobs/{digest}")
    assert response.status == 404 and await error_code(response) == "BLOB_UNKNOWN"
    body = await response.json()
    assert body["errors"][0]["detail"] == {"digest": digest, "quarantined": True}
    assert "failed verification" in body["errors"][0]["message"] and "push it again" in body["errors"][0]["message"]
    (note,) = [json.loads(p.read_text()) for p in (root / "quarantine").glob("*.json")]
    assert note["what"] == "blob" and note["digest"] == digest and note["unlinked_from"] == ["team/app"]
    assert note["actual"] != digest and note["reason"].startswith("verification on read")
    assert (await client.head(f"/v2/team/app/blobs/{digest}")).status == 404  # unlinked: a pusher re-uploads
    await push_blob(client, "team/app", LAYER)
    response = await client.get(f"/v2/team/app/blobs/{digest}")
    assert response.status == 200 and await response.read() == LAYER


async def test_first_remembers_across_processes_through_the_database(make_client: MakeClient,
                                                                     tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = await make_client(root=root, verify_on_read="first")
    digest = await push_blob(first, "team/app", LAYER)
    assert (await first.get(f"/v2/team/app/blobs/{digest}")).status == 200
    second = await make_client(root=root, verify_on_read="first")  # another worker, or after a restart
    response = await second.get(f"/v2/team/app/blobs/{digest}")
    assert response.status == 200 and await response.read() == LAYER
    assert second.server.app[VERIFIER].hashed == 0


async def test_always_rehashes_every_get_and_ranges_too(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_client(root=root, verify_on_read="always")
    digest = await push_blob(client, "team/app", LAYER)
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status == 200
    partial = await client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": "bytes=0-9"})
    assert partial.status == 206 and await partial.read() == LAYER[:10]
    assert client.server.app[VERIFIER].hashed == 2
    flip_byte(root, digest)
    ranged = await client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": "bytes=0-9"})
    assert ranged.status == 404 and await error_code(ranged) == "BLOB_UNKNOWN"


async def test_concurrent_first_gets_share_one_hash(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(root=tmp_path / "root", verify_on_read="first")
    digest = await push_blob(client, "team/app", LAYER * 50)
    responses = await asyncio.gather(*(client.get(f"/v2/team/app/blobs/{digest}") for _ in range(8)))
    assert [r.status for r in responses] == [200] * 8
    assert client.server.app[VERIFIER].hashed == 1


async def test_off_serves_a_corrupt_blob_as_it_is(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_client(root=root, verify_on_read="off")
    digest = await push_blob(client, "team/app", LAYER)
    flip_byte(root, digest)
    response = await client.get(f"/v2/team/app/blobs/{digest}")
    assert response.status == 200 and sha256(await response.read()) != digest
    assert client.server.app[VERIFIER].hashed == 0


async def test_default_is_first(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_client(root=root)
    digest = await push_blob(client, "team/app", LAYER)
    flip_byte(root, digest)
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status == 404


def _aged(path: Path, age: float) -> Path:
    path.write_bytes(b"left by a crashed writer")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_sweep_temp_files_removes_only_old_ones(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "root")
    old = _aged(storage.paths.tmp / "blob-old", TMP_MAX_AGE_SECONDS + 60)
    fresh = _aged(storage.paths.tmp / "blob-in-flight", 5)  # an atomic write a second ago: kept
    assert sweep_temp_files(storage) == 1
    assert not old.exists() and fresh.exists()
    assert sweep_temp_files(storage, now=time.time() + TMP_MAX_AGE_SECONDS + 60) == 1
    assert not fresh.exists()
    storage.close()


async def test_the_server_sweeps_temp_files_at_start(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    open_storage(root).close()
    old = _aged(root / "tmp" / "blob-crashed", TMP_MAX_AGE_SECONDS + 60)
    fresh = _aged(root / "tmp" / "blob-fresh", 1)
    await make_client(root=root, run_janitor=True)
    for _ in range(100):
        if not old.exists():
            break
        await asyncio.sleep(0.02)
    assert not old.exists() and fresh.exists()

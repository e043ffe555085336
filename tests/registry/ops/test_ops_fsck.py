"""``lamina registry fsck``: every kind of damage found (a flipped byte, a deleted blob, a stray file, a
dropped row, a wrong size, a corrupt manifest), reported with the manifests and tags it affects, left
alone without --repair, quarantined or fixed with it, and the server answering as docs/registry.md says."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from opstools import OpsClient
from regtools import descriptor, error_code, push_blob, push_image, sha256

from lamina.cli import main
from lamina.oci import mediatypes as mt
from lamina.oci import parse_digest
from lamina.registry.fsck import run_fsck
from lamina.registry.gc import GcSettings, run_gc
from lamina.store import StorePaths, open_storage


def blob_path(root: Path, digest: str) -> Path:
    return StorePaths(root).blob(parse_digest(digest))


def flip_byte(path: Path) -> None:
    """Corrupt a blob in place, same size (as a bad disk or a careless admin would)."""
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    path.chmod(0o400)


def lamina(*argv: str) -> subprocess.CompletedProcess[str]:
    """``lamina ARGV...`` in this process (the live tests run the real command line): status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def fsck(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return lamina("registry", "fsck", "--root", str(root), *args)


def by_kind(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for problem in report["problems"]:
        kinds.setdefault(problem["kind"], []).append(problem)
    return kinds


async def test_a_clean_root_exits_0_with_progress_on_stderr(make_ops_client: OpsClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root)
    await push_image(client, "team/app", "v1", layers=[b"layer one", b"layer two"])
    await push_blob(client, "team/app", b"pushed, never used")
    result = fsck(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems" in result.stdout and "0 unreferenced blob(s)" in result.stdout  # linked: not garbage yet
    assert "fsck: re-hashing 4 blob(s)" in result.stderr and "4/4 blob(s) re-hashed" in result.stderr
    assert result.stdout.count("\n") == 1 and "re-hashing" not in result.stdout  # progress stays on stderr
    assert json.loads(fsck(root, "--json").stdout)["clean"] is True


async def _damaged_root(client: TestClient, root: Path) -> dict[str, str]:  # type: ignore[type-arg]
    """Push three images, then damage the root six ways; the digests involved, by name."""
    await push_image(client, "team/app", "v1", layers=[b"base layer", b"app layer v1"])
    await push_image(client, "team/app", "latest", layers=[b"base layer", b"app layer v1"],
                     annotations={"org.example.build": "2"})  # another manifest, same layers
    _, v2 = await push_image(client, "team/app", "v2", layers=[b"base layer", b"app layer v2"])
    _, other = await push_image(client, "team/other", "v1", layers=[b"other layer"])
    _, bad_manifest = await push_image(client, "team/docs", "v1", layers=[b"docs layer"])
    d = {"flipped": sha256(b"app layer v1"), "deleted": sha256(b"other layer"), "unlinked": sha256(b"app layer v2"),
         "resized": sha256(b"base layer"), "v2": v2, "other": other, "bad_manifest": bad_manifest}
    flip_byte(blob_path(root, d["flipped"]))
    blob_path(root, d["deleted"]).unlink()
    stray = root / "blobs" / "sha256" / "zz"
    stray.mkdir()
    (stray / "notes.txt").write_text("not a blob")
    db = sqlite3.connect(root / "metadata.db")
    with db:
        repo = "(SELECT id FROM repositories WHERE name = 'team/app')"
        db.execute(f"DELETE FROM blob_links WHERE repository_id = {repo} AND digest = ?", (d["unlinked"],))
        db.execute("UPDATE blob_links SET size = 3 WHERE digest = ?", (d["resized"],))
        db.execute("UPDATE manifests SET content = CAST(? AS BLOB) WHERE digest = ?", (b'{"schemaVersion": 3}',
                                                                                       d["bad_manifest"]))
    db.close()
    return d


async def test_fsck_finds_each_kind_of_damage_and_changes_nothing(make_ops_client: OpsClient,
                                                                   tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root)
    d = await _damaged_root(client, root)
    before = sorted(p for p in root.rglob("*") if p.is_file() and "metadata.db" not in p.name)
    db_before = (root / "metadata.db").read_bytes()
    result = fsck(root, "--json")
    assert result.returncode == 1, result.stderr
    kinds = by_kind(json.loads(result.stdout))
    assert set(kinds) == {"corrupt-blob", "missing-blob", "stray-file", "unlinked-reference", "size-mismatch",
                          "corrupt-manifest"}
    (flipped,) = kinds["corrupt-blob"]
    assert flipped["subject"] == d["flipped"] and "hash to sha256:" in flipped["message"]
    affected = {(a["repository"], tuple(a["tags"])) for a in flipped["affects"]}
    assert affected == {("team/app", ("latest",)), ("team/app", ("v1",))}
    (missing,) = kinds["missing-blob"]
    assert missing["subject"] == d["deleted"]
    assert missing["affects"] == [{"repository": "team/other", "manifest": d["other"], "tags": ["v1"]}]
    assert kinds["stray-file"][0]["subject"].endswith("blobs/sha256/zz/notes.txt")
    (unlinked,) = kinds["unlinked-reference"]
    assert unlinked["subject"] == d["unlinked"] and unlinked["affects"][0]["manifest"] == d["v2"]
    assert {p["subject"] for p in kinds["size-mismatch"]} == {d["resized"]}
    assert kinds["corrupt-manifest"][0]["subject"] == f"team/docs@{d['bad_manifest']}"
    assert all(p["repair"] is None for p in json.loads(result.stdout)["problems"])
    # read-only: not a file moved, not a row changed
    assert sorted(p for p in root.rglob("*") if p.is_file() and "metadata.db" not in p.name) == before
    assert (root / "metadata.db").read_bytes() == db_before
    text = fsck(root)
    assert text.returncode == 1
    assert f"corrupt-blob {d['flipped']}: " in text.stdout and "team/app@" in text.stdout
    assert "(tags: v1)" in text.stdout and "run `lamina registry fsck --repair`" in text.stdout


async def test_repair_quarantines_and_the_server_answers_as_documented(make_ops_client: OpsClient,
                                                                       tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root, verify_on_read="off")
    d = await _damaged_root(client, root)
    # before: verification off, the flipped blob is served as is (what fsck is for)
    served = await client.get(f"/v2/team/app/blobs/{d['flipped']}")
    assert served.status == 200 and await served.read() != b"app layer v1"
    assert (await client.get(f"/v2/team/app/blobs/{d['unlinked']}")).status == 404
    result = fsck(root, "--repair", "--json")
    assert result.returncode == 1, result.stderr
    problems = json.loads(result.stdout)["problems"]
    repairs = {p["kind"]: p["repair"] for p in problems}
    assert "quarantined to" in repairs["corrupt-blob"] and "quarantined to" in repairs["stray-file"]
    assert "dropped its link(s) from team/other" in repairs["missing-blob"]
    assert repairs["unlinked-reference"] == "linked it into team/app again"
    assert "recorded size set" in repairs["size-mismatch"]
    assert "deleted with its tags" in repairs["corrupt-manifest"]
    quarantine = root / "quarantine"
    notes = [json.loads(p.read_text()) for p in quarantine.glob("*.json")]
    assert {n["what"] for n in notes} == {"blob", "stray", "manifest"}
    blob_note = next(n for n in notes if n["what"] == "blob")
    assert blob_note["digest"] == d["flipped"] and blob_note["unlinked_from"] == ["team/app"]
    assert any("team/app@" in a and "(tags: v1)" in a for a in blob_note["affects"])
    assert (quarantine / Path(blob_note["original_path"]).name).exists() is False  # renamed with a stamp
    assert not blob_path(root, d["flipped"]).exists() and not (root / "blobs/sha256/zz/notes.txt").exists()
    # the server now: corrupt blob gone (404), unlinked layer back (200), corrupt manifest gone, sizes right
    response = await client.get(f"/v2/team/app/blobs/{d['flipped']}")
    assert response.status == 404 and await error_code(response) == "BLOB_UNKNOWN"
    response = await client.get(f"/v2/team/app/blobs/{d['unlinked']}")
    assert response.status == 200 and await response.read() == b"app layer v2"
    head = await client.head(f"/v2/team/app/blobs/{d['resized']}")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(b"base layer"))
    response = await client.get("/v2/team/docs/manifests/v1")
    assert response.status == 404 and await error_code(response) == "MANIFEST_UNKNOWN"
    # what is still broken is reported again, and nothing else
    again = fsck(root, "--json")
    assert again.returncode == 1
    left = by_kind(json.loads(again.stdout))
    assert set(left) == {"missing-blob"}
    assert {p["subject"] for p in left["missing-blob"]} == {d["flipped"], d["deleted"]}
    # the clients push the blobs again: clean
    await push_blob(client, "team/app", b"app layer v1")
    await push_blob(client, "team/other", b"other layer")
    final = fsck(root)
    assert final.returncode == 0, final.stdout
    response = await client.get(f"/v2/team/app/blobs/{d['flipped']}")
    assert response.status == 200 and await response.read() == b"app layer v1"


async def test_run_fsck_reports_files_nothing_uses_as_garbage_not_problems(make_ops_client: OpsClient,
                                                                            tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root)
    await push_image(client, "team/app", "v1", layers=[b"kept"])
    orphan = await push_blob(client, "team/app", b"orphan")
    db = sqlite3.connect(root / "metadata.db")
    with db:
        db.execute("DELETE FROM blob_links WHERE digest = ?", (orphan,))  # a file without rows: gc's job
    db.close()
    lines: list[str] = []
    report = run_fsck(StorePaths(root), progress=lines.append)
    assert report.clean and report.unreferenced_blobs == 1 and report.unreferenced_bytes == len(b"orphan")
    assert report.blobs_checked == 3 and report.manifests_checked == 1 and report.repositories == 1
    assert lines[0] == "fsck: reading the database"


def test_fsck_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = fsck(tmp_path / "nothing")
    assert missing.returncode == 2 and "is not a registry root" in missing.stderr
    assert missing.stderr.count("\n") == 1
    config = tmp_path / "bad.toml"
    config.write_text('verify_on_read = "sometimes"\n')
    bad = lamina("registry", "fsck", "--config", str(config))
    assert bad.returncode == 2 and "verify_on_read: expected one of off, first, always" in bad.stderr
    flag = fsck(tmp_path, "--fix")
    assert flag.returncode == 2 and "--fix" in flag.stderr


async def test_fsck_reads_a_root_through_its_settings_file(make_ops_client: OpsClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root)
    await push_image(client, "team/app", "v1", layers=[b"one"])
    flip_byte(blob_path(root, sha256(b"one")))
    config = tmp_path / "registry.yaml"
    config.write_text(f"root: {root}\n")
    result = lamina("registry", "fsck", "--config", str(config))
    assert result.returncode == 1 and f"corrupt-blob {sha256(b'one')}" in result.stdout


async def test_an_index_missing_its_child_is_reported_with_its_tags(make_ops_client: OpsClient,
                                                                    tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root)
    child, child_digest = await push_image(client, "team/multi", None, layers=[b"arm64 layer"])
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {**descriptor(child, mt.OCI_MANIFEST), "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()
    response = await client.put("/v2/team/multi/manifests/v1", data=index, headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 201
    db = sqlite3.connect(root / "metadata.db")
    db.execute("PRAGMA foreign_keys = ON")
    with db:
        db.execute("DELETE FROM manifests WHERE digest = ?", (child_digest,))
    db.close()
    report = run_fsck(StorePaths(root), repair=True)
    (problem,) = report.problems
    assert (problem.kind, problem.subject, problem.repair) == ("missing-child", f"team/multi@{child_digest}", None)
    assert [str(a) for a in problem.affects] == [f"team/multi@{sha256(index)} (tags: v1)"]
    assert report.unreferenced_blobs == 0  # the child's layer and config stay linked to team/multi


async def test_repair_drops_verification_records_of_collected_blobs(make_ops_client: OpsClient,
                                                                    tmp_path: Path) -> None:
    root = tmp_path / "root"
    client = await make_ops_client(root=root, verify_on_read="first")
    digest = await push_blob(client, "team/app", b"read once, then collected")
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status == 200
    storage = open_storage(root)
    assert [d for d, _ in run_gc(storage, GcSettings(grace_seconds=0.0)).blobs] == [digest]
    storage.close()
    assert run_fsck(StorePaths(root)).stale_checks_dropped == 0  # read-only: nothing dropped
    report = run_fsck(StorePaths(root), repair=True)
    assert report.clean and report.stale_checks_dropped == 1
    db = sqlite3.connect(root / "metadata.db")
    assert db.execute("SELECT count(*) FROM blob_checks").fetchone() == (0,)
    db.close()

"""Ops settings through the real config loader and CLI: TOML and YAML files, the exposure warning,
``lamina registry lifecycle``, and a server whose background GC runs on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.registries import free_port
from lamina.registry.config import ConfigError, load_config
from lamina.registry.ops import exposure_warning


def test_ops_keys_load_from_toml_and_yaml(tmp_path: Path, htpasswd: Path) -> None:
    toml = tmp_path / "registry.toml"
    toml.write_text(f"""
listen = "127.0.0.1:5999"
access_log = true
[auth]
htpasswd = "{htpasswd}"
[[auth.rules]]
repositories = ["**"]
users = ["*"]
actions = ["pull"]
[[immutable_tags]]
repositories = ["apps/**"]
exclude = ["cache"]
[gc]
grace_seconds = 60
delete_untagged = true
[[lifecycle.rules]]
repositories = ["**"]
cache_unused_days = 3
""")
    config = load_config(toml)
    assert config.port == 5999 and config.ops.access_log
    assert config.ops.auth is not None and config.ops.auth.rules[0].users == ("*",)
    assert config.ops.immutable_tags[0].exclude == ("cache",)
    assert config.ops.gc.grace_seconds == 60 and config.ops.gc.delete_untagged
    assert config.ops.lifecycle.rules[0].cache_unused_days == 3
    yaml = tmp_path / "registry.yaml"
    yaml.write_text("gc:\n  interval_seconds: 600\nimmutable_tags:\n  - repositories: ['x/*']\n")
    config = load_config(yaml)
    assert config.ops.gc.interval_seconds == 600 and config.ops.immutable_tags[0].repositories == ("x/*",)
    assert config.ops.auth is None and load_config(None).ops.gc.grace_seconds == 3600


def test_unknown_and_bad_ops_keys_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gc]\ngrace = 5\n")
    with pytest.raises(ConfigError, match=r"gc\.grace"):
        load_config(path)
    path.write_text("metrics = 'yes'\n")
    with pytest.raises(ConfigError, match="metrics: expected true or false"):
        load_config(path)
    path.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="immutable_tags"):  # the message lists the known keys
        load_config(path)


def test_exposure_warning_only_for_non_loopback_without_auth(htpasswd: Path) -> None:
    from opstools import ops_from_toml

    plain = ops_from_toml("")
    with_auth = ops_from_toml(f'[auth]\nhtpasswd = "{htpasswd}"\n')
    assert exposure_warning("127.0.0.1", plain) is None and exposure_warning("::1", plain) is None
    assert exposure_warning("localhost", plain) is None
    warning = exposure_warning("0.0.0.0", plain)
    assert warning is not None and "WITHOUT AUTHENTICATION" in warning
    assert exposure_warning("0.0.0.0", with_auth) is None


def test_serve_on_all_interfaces_without_auth_warns_loudly(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina.cli", "registry", "serve", "--listen", f"0.0.0.0:{port}", "--root",
         str(tmp_path / "root"), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if "WITHOUT AUTHENTICATION" in line or not line:
                break
        assert any("WITHOUT AUTHENTICATION" in line for line in lines), lines
    finally:
        process.terminate()
        process.wait(10)


def test_lifecycle_cli_previews_then_deletes(tmp_path: Path) -> None:
    from lamina.oci import digest_of
    from lamina.store import ManifestRecord, ManifestReference, open_storage

    root = tmp_path / "root"
    storage = open_storage(root)
    layer = b"stale cache layer"
    storage.blobs.put(digest_of(layer), layer)
    storage.metadata.link_blob("ci/app", digest_of(layer), len(layer))
    body = json.dumps({"layer": str(digest_of(layer))}).encode()
    record = ManifestRecord("ci/app", digest_of(body), "application/vnd.oci.image.manifest.v1+json", body, "cache",
                            None, None, None, time.time() - 90 * 86400, None)
    storage.metadata.put_manifest(record, [ManifestReference(digest_of(layer), len(layer))], "cache")
    storage.close()
    config = tmp_path / "registry.toml"
    config.write_text('[[lifecycle.rules]]\nrepositories = ["ci/**"]\ncache_unused_days = 30\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lamina.cli", "registry", "lifecycle", "--root", str(root),
                               "--config", str(config), *args], capture_output=True, text=True, timeout=60)

    preview = cli("--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert f"would delete ci/app@{record.digest} [cache] tags=cache" in preview.stdout
    assert "1 manifest(s) would be deleted" in preview.stdout
    real = cli()
    assert real.returncode == 0 and "lifecycle: 1 manifest(s) deleted" in real.stdout
    assert "0 manifest(s)" in cli().stdout
    gc = subprocess.run([sys.executable, "-m", "lamina.cli", "registry", "gc", "--root", str(root), "--grace", "0"],
                        capture_output=True, text=True, timeout=60)
    assert f"deleted blob {digest_of(layer)}" in gc.stdout
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    none = subprocess.run([sys.executable, "-m", "lamina.cli", "registry", "lifecycle", "--root", str(root),
                           "--config", str(empty)], capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and "lifecycle.rules" in none.stderr


def test_ops_commands_refuse_a_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    config = tmp_path / "registry.toml"
    config.write_text('[[lifecycle.rules]]\nrepositories = ["ci/**"]\ncache_unused_days = 30\n')
    for command in ("gc", "lifecycle"):
        done = subprocess.run([sys.executable, "-m", "lamina.cli", "registry", command, "--root", str(missing),
                               "--config", str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr == f"lamina registry: root {missing} does not exist\n", done.stderr
        assert not missing.exists()


def test_server_runs_gc_in_the_background_and_counts_it(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry(config="[gc]\ninterval_seconds = 0.2\ngrace_seconds = 0\n", workers=2)
    junk = os.urandom(1000)
    digest = "sha256:" + __import__("hashlib").sha256(junk).hexdigest()
    request = urllib.request.Request(f"{server.url}/v2/bg/junk/blobs/uploads/?digest={digest}", data=junk,
                                     method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.url}/metrics") as response:
            text = response.read().decode()
        if "lamina_gc_bytes_freed_total 1000" in text:
            break
        time.sleep(0.2)
    assert "lamina_gc_bytes_freed_total 1000" in text, text
    assert not any(server.root.glob(f"blobs/sha256/*/{digest.split(':')[1]}"))


def test_server_applies_lifecycle_rules_in_the_background(make_lamina_registry) -> None:  # type: ignore[no-untyped-def]
    from helpers.buildkit_cache import buildkit_cache

    server = make_lamina_registry(
        config="[lifecycle]\ninterval_seconds = 0.2\n[[lifecycle.rules]]\nrepositories = ['ci/**']\nquota_bytes = 0\n",
        workers=1,
    )
    cache = buildkit_cache()
    for blob in cache.blobs():
        request = urllib.request.Request(f"{server.url}/v2/ci/app/blobs/uploads/?digest={blob.digest}",
                                         data=blob.data, method="POST")
        with urllib.request.urlopen(request) as response:
            assert response.status == 201
    request = urllib.request.Request(f"{server.url}/v2/ci/app/manifests/cache", data=cache.image_manifest.data,
                                     method="PUT", headers={"Content-Type": cache.image_manifest.media_type})
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    deadline = time.monotonic() + 20
    status = 200
    while time.monotonic() < deadline and status == 200:
        time.sleep(0.2)
        try:
            with urllib.request.urlopen(f"{server.url}/v2/ci/app/manifests/cache") as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
    assert status == 404  # over its quota of 0 bytes: the build cache was evicted
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        assert "lamina_lifecycle_manifests_expired_total 1" in response.read().decode()

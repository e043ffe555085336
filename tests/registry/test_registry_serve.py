"""Settings (TOML/YAML file, CLI on top, one-line errors) and ``lamina registry serve`` as a real
subprocess: pre-flight errors exit 2 with one line, N workers share the port, uploads survive a restart."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers.api import get_blob, push_blob, put_manifest
from helpers.registries import RegistryProcess, free_port, start_lamina
from lamina.oci import mediatypes as mt
from lamina.registry.config import ConfigError, RegistryConfig, load_config
from lamina.registry.limits import LimitSettings


def test_defaults_and_environment_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAMINA_REGISTRY_ROOT", raising=False)
    config = load_config()
    assert (config.host, config.port, config.root) == ("127.0.0.1", 5000, Path("lamina-data"))
    assert config.max_manifest_bytes == 4 << 20 and config.legacy_buildkit_cache == "accept"
    assert config.allow_empty_layers is False and config.upload_expiry_seconds == 3600
    assert config.limits == LimitSettings() and config.limits.max_blob_bytes == 10 << 30
    monkeypatch.setenv("LAMINA_REGISTRY_ROOT", str(tmp_path))
    assert load_config().root == tmp_path


def test_toml_and_yaml_files_with_cli_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "registry.toml"
    toml.write_text(
        'listen = "0.0.0.0:6000"\nroot = "/srv/data"\nmax_manifest_bytes = 8192\n'
        'legacy_buildkit_cache = "reject"\nallow_empty_layers = true\nupload_expiry_seconds = 60\n'
        'sqlite_synchronous = "normal"\nworkers = 3\n'
    )
    config = load_config(toml)
    assert config == RegistryConfig(
        host="0.0.0.0", port=6000, root=Path("/srv/data"), workers=3, max_manifest_bytes=8192,
        legacy_buildkit_cache="reject", allow_empty_layers=True, upload_expiry_seconds=60.0,
        sqlite_synchronous="NORMAL",
    )
    overridden = load_config(toml, {"listen": "127.0.0.1:7000", "root": None, "workers": 1})
    assert (overridden.port, overridden.root, overridden.workers) == (7000, Path("/srv/data"), 1)
    yaml_file = tmp_path / "registry.yaml"
    yaml_file.write_text("legacy_buildkit_cache: reject\nmax_manifest_bytes: 100000\n")
    assert load_config(yaml_file).legacy_buildkit_cache == "reject"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("colour = 1\n", "'colour'"),
        ('legacy_buildkit_cache = "maybe"\n', "legacy_buildkit_cache"),
        ("max_manifest_bytes = -5\n", "max_manifest_bytes"),
        ('allow_empty_layers = "yes"\n', "allow_empty_layers"),
        ('listen = "localhost"\n', "listen"),
        ("workers = 0\n", "workers"),
        ('sqlite_synchronous = "sometimes"\n', "sqlite_synchronous"),
        ("this is = not toml [\n", "not valid"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def _serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina.cli", "registry", "serve", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def _one_error_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_preflight_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    _one_error_line(_serve("--listen", "nonsense", "--root", str(tmp_path)), "listen")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_error_line(_serve("--root", str(blocker / "sub"), "--listen", f"127.0.0.1:{free_port()}"), "not writable")
    config = tmp_path / "c.toml"
    config.write_text("unknown_key = 1\n")
    _one_error_line(_serve("--config", str(config), "--root", str(tmp_path)), "unknown_key")
    _one_error_line(_serve("--config", str(tmp_path / "missing.toml"), "--root", str(tmp_path)), "missing.toml")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _one_error_line(_serve("--listen", f"127.0.0.1:{port}", "--root", str(tmp_path / "r")), "already in use")


def test_a_second_lamina_on_the_same_port_is_refused(tmp_path: Path) -> None:
    first = start_lamina(tmp_path / "first", workers=1)
    try:
        second = _serve("--listen", first.host, "--root", str(tmp_path / "second"), "--workers", "2")
        _one_error_line(second, "already in use")
        assert first.running
    finally:
        first.stop()


def _push_image(url: str, name: str, tag: str) -> bytes:
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = f"layer of {name}".encode()
    descriptors = []
    for data, media_type in ((config, mt.OCI_CONFIG), (layer, mt.OCI_LAYER_GZIP)):
        descriptors.append({"mediaType": media_type, "digest": push_blob(url, name, data), "size": len(data)})
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": descriptors[0],
                       "layers": descriptors[1:]}).encode()
    put_manifest(url, name, tag, body, mt.OCI_MANIFEST)
    return body


def test_serve_with_two_workers_and_a_restart(tmp_path: Path) -> None:
    server: RegistryProcess = start_lamina(tmp_path, workers=2)
    try:
        log = server.stderr_text()
        assert f"listening on http://{server.host}" in log and "skopeo copy" in log
        bodies = {f"team/app{i}": _push_image(server.url, f"team/app{i}", "v1") for i in range(6)}
        session = requests.Session()  # several connections, spread across workers by SO_REUSEPORT
        for name, body in bodies.items():
            got = session.get(f"{server.url}/v2/{name}/manifests/v1", headers={"Accept": mt.OCI_MANIFEST})
            assert got.status_code == 200 and got.content == body
            assert got.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        started = requests.post(f"{server.url}/v2/app/blobs/uploads/", timeout=10)
        location = server.url + started.headers["Location"]
        data = b"0123456789" * 1000
        first = requests.patch(location, data=data[:4000], headers={"Content-Range": "0-3999"}, timeout=10)
        assert first.status_code == 202
        server.restart()
        status = requests.get(location, timeout=10)
        assert status.status_code == 204 and status.headers["Range"] == "0-3999"
        rest = requests.patch(location, data=data[4000:], headers={"Content-Range": f"4000-{len(data) - 1}"},
                              timeout=10)
        assert rest.status_code == 202
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert requests.put(location, params={"digest": digest}, timeout=10).status_code == 201
        assert get_blob(server.url, "app", digest) == data
        catalog = requests.get(f"{server.url}/v2/_catalog", timeout=10).json()
        assert set(bodies) <= set(catalog["repositories"])
    finally:
        server.stop()


def test_public_api_is_pinned_and_lazy() -> None:
    import lamina.registry as registry

    assert sorted(registry.__all__) == [
        "ConfigError", "ErrorCode", "RegistryConfig", "RegistryError", "create_app", "load_config"
    ]
    for name in registry.__all__:
        assert getattr(registry, name) is not None
    with pytest.raises(AttributeError):
        _ = registry.routes_that_do_not_exist
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, lamina.registry.cli; print('sqlalchemy' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "False"


def test_blob_get_under_uvloop_whole_ranges_and_disconnects(tmp_path: Path) -> None:
    """The served process runs uvloop, where blob bodies go through lamina's own sendfile path."""
    import hashlib
    import os

    server = start_lamina(tmp_path, workers=1)
    try:
        data = os.urandom(24 << 20)
        digest = push_blob(server.url, "app", data)
        assert get_blob(server.url, "app", digest) == data
        part = requests.get(f"{server.url}/v2/app/blobs/{digest}", headers={"Range": "bytes=5-10485760"}, timeout=30)
        assert part.status_code == 206 and part.content == data[5:10485761]
        for _ in range(3):  # clients that vanish mid-body must not disturb the server
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(f"GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                sock.recv(65536)
        session = requests.Session()  # keep-alive: the next response on the connection is intact
        for _ in range(3):
            head = session.get(f"{server.url}/v2/app/blobs/{digest}", headers={"Range": "bytes=0-99"}, timeout=30)
            assert head.content == data[:100]
            assert hashlib.sha256(session.get(f"{server.url}/v2/app/blobs/{digest}", timeout=30).content).hexdigest() \
                == digest.split(":")[1]
        assert server.running
    finally:
        server.stop()

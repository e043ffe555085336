"""The recipe of docs/registry.md "Running several replicas", for real: examples/replicas/haproxy.cfg
(Debian's haproxy, round robin per request) in front of two replicas on PostgreSQL + Ceph RGW. lamina's
client pushes a layer in 1 MiB PATCHes through it — the PATCHes land on both replicas — and pulls it back."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import requests
from cluster import MakeCluster
from scaletools import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

from helpers.binaries import require_binary
from helpers.registries import free_port
from lamina.client import RegistryClient
from lamina.client.blobs import PushOutcome
from lamina.registry.config import load_config

MiB = 1 << 20
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "replicas"


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} should appear once in the example"
    return text.replace(old, new)


def _wait_port(port: int, process: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "haproxy exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"haproxy did not listen on {port}")


def test_the_example_settings_load_and_are_the_documented_ones() -> None:
    config = load_config(EXAMPLES / "registry.toml")
    assert config.metadata is not None and config.blobs is not None and config.ops.gc.interval_seconds == 3600
    docs = (EXAMPLES.parents[1] / "docs" / "registry.md").read_text()
    for name, first in (("registry.toml", "metadata = "), ("haproxy.cfg", "global")):
        text = (EXAMPLES / name).read_text()
        body = text[text.index(first):].rstrip("\n")
        indented = "\n".join(f"   {line}" if line else "" for line in body.splitlines())
        assert indented in docs, f"docs/registry.md should show examples/replicas/{name} as it is"


async def test_pushes_and_pulls_through_haproxy_spread_over_both_replicas(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    haproxy = require_binary("haproxy", "haproxy")
    cluster = make_cluster(replicas=2, extra="access_log = true\n")
    a, b = cluster.replicas
    port = free_port()
    text = (EXAMPLES / "haproxy.cfg").read_text()
    text = _replace_once(text, "bind 0.0.0.0:5000", f"bind 127.0.0.1:{port}")
    text = _replace_once(text, "10.0.0.11:5000", a.host)
    text = _replace_once(text, "10.0.0.12:5000", b.host)
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    check = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proxy)
        layer = os.urandom(6 * MiB + 7)
        layer_path = tmp_path / "layer.bin"  # from a file, lamina's client sends chunk_size PATCHes
        layer_path.write_bytes(layer)
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        image_config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        config_digest = "sha256:" + hashlib.sha256(image_config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(image_config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }).encode()
        async with RegistryClient(f"127.0.0.1:{port}", monolithic_limit=MiB // 2, chunk_size=MiB) as client:
            assert await client.push_blob("lb/app", layer_digest, len(layer), layer_path) == PushOutcome.UPLOADED
            assert await client.push_blob("lb/app", config_digest, len(image_config), image_config) \
                == PushOutcome.UPLOADED
            await client.put_manifest("lb/app", "v1", manifest, OCI_MANIFEST)
            got = b"".join([chunk async for chunk in client.get_blob("lb/app", layer_digest, size=len(layer))])
            assert got == layer
        for _ in range(4):  # any replica answers for the tag
            pulled = requests.get(f"http://127.0.0.1:{port}/v2/lb/app/manifests/v1", timeout=10,
                                  headers={"Accept": OCI_MANIFEST})
            assert pulled.status_code == 200 and pulled.content == manifest
    finally:
        proxy.terminate()
        proxy.wait(10)
    patches = [replica.stderr_text(1 << 22).count('"PATCH"') for replica in (a, b)]
    # one upload (7 PATCHes of 1 MiB) spread over both replicas
    assert all(count > 0 for count in patches) and sum(patches) >= 7, (patches, a.stderr_text(600))

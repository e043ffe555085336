"""The shared fixtures do what other tests rely on: a usable busybox root filesystem, deterministic layers,
registries that keep their data across a restart and explain a failed start."""

from __future__ import annotations

import gzip
import io
import os
import socket
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import helpers.registries as registries
from helpers.api import blob_exists, push_blob
from helpers.images import APPLETS, layer_from_dir, layer_from_files
from helpers.registries import RegistryProcess, ServerStartError, start_lamina

pytestmark = [pytest.mark.interop]


def test_busybox_rootfs(busybox_rootfs: Path) -> None:
    for applet in APPLETS:
        link = busybox_rootfs / "bin" / applet
        assert link.is_symlink() and os.readlink(link) == "busybox", applet
    passwd = (busybox_rootfs / "etc" / "passwd").read_text().splitlines()
    assert [line.split(":")[:4] for line in passwd] == [
        ["root", "x", "0", "0"], ["nobody", "x", "65534", "65534"], ["app", "x", "1000", "1000"],
    ]  # fmt: skip
    assert "app:x:1000:" in (busybox_rootfs / "etc" / "group").read_text()
    assert stat.S_IMODE((busybox_rootfs / "tmp").stat().st_mode) == 0o1777
    # the binary really is a working static busybox
    out = subprocess.run([busybox_rootfs / "bin" / "busybox", "echo", "hi"], capture_output=True, text=True, check=True)
    assert out.stdout == "hi\n"


def test_layers_are_deterministic(busybox_rootfs: Path) -> None:
    first, second = layer_from_dir(busybox_rootfs), layer_from_dir(busybox_rootfs)
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first.data))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert (members["home/app"].uid, members["home/app"].gid) == (1000, 1000)
    assert (members["bin/busybox"].uid, members["bin/busybox"].mode) == (0, 0o755)
    assert members["tmp"].mode == 0o1777
    names = list(members)
    assert names.index("bin") < names.index("bin/busybox"), "a directory comes before its entries"
    assert layer_from_files({"a": b"1"}).digest != layer_from_files({"a": b"2"}).digest


def test_restart_keeps_the_root(make_lamina_registry: Callable[..., RegistryProcess]) -> None:
    registry = make_lamina_registry()
    digest = push_blob(registry.url, "keep/me", b"survives a restart")
    old_port = registry.port
    registry.restart()
    assert registry.running and registry.port == old_port
    assert blob_exists(registry.url, "keep/me", digest)
    registry.stop()
    assert not registry.running


def test_failed_start_shows_the_server_output(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="legacy_buildkit_cache"):
        start_lamina(tmp_path, config='legacy_buildkit_cache = "sometimes"\n')


def test_a_taken_port_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between picking a free port and the server binding it, someone else may take it."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = registries.free_port
        monkeypatch.setattr(registries, "free_port", lambda: next(ports, None) or real_free_port())
        with registries.start_distribution(tmp_path) as server:
            assert server.port != taken and server.running
    assert "in use" in (tmp_path / "server.log").read_text()

"""A base image made by real umoci builds on: its layers carry a root entry (``.`` from ``umoci repack``,
``/`` from ``umoci insert ... /``), which lamina's unpacker once refused as an absolute path.

The image is made with umoci from the busybox-static root filesystem, pushed to a lamina registry over
loopback with skopeo, and built on with a COPY and a RUN (real runc, as root).
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers.binaries import require_binary
from helpers.images import DEFAULT_PATH, make_busybox_rootfs, push_layout
from helpers.registries import RegistryProcess
from lamina.cli import main

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


def _umoci(*args: str | Path) -> None:
    proc = subprocess.run(["umoci", *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"umoci {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.strip()}")


def _layer_root_names(layout: Path) -> set[str]:
    """The raw name of the first member of each gzip layer in the layout (umoci writes the root first)."""
    names = set()
    for blob in (layout / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            names.add(gzip.decompress(data)[:100].split(b"\0", 1)[0].decode())
    return names


@pytest.fixture(scope="module")
def umoci_base(lamina_registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    require_binary("umoci", "umoci")
    require_binary("skopeo", "skopeo")
    work = tmp_path_factory.mktemp("umoci")
    layout, bundle, extra = work / "layout", work / "bundle", work / "extra"
    _umoci("init", "--layout", layout)
    _umoci("new", "--image", f"{layout}:base")
    _umoci("unpack", "--image", f"{layout}:base", bundle)
    make_busybox_rootfs(bundle / "rootfs")
    _umoci("repack", "--image", f"{layout}:base", bundle)
    extra.mkdir()
    (extra / "from-insert.txt").write_text("inserted by umoci\n")
    _umoci("insert", "--image", f"{layout}:base", extra, "/")  # a layer whose first entry is '/'
    _umoci("config", "--image", f"{layout}:base", "--config.env", DEFAULT_PATH, "--config.cmd", "sh")
    assert {".", "/"} <= _layer_root_names(layout)  # the two spellings this test is about
    reference = f"{lamina_registry.host}/umoci/base:latest"
    push_layout(layout, reference, tag="base")
    return reference


def test_build_from_an_umoci_image(umoci_base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "hello.txt").write_text("hello from the context\n")
    (context / "Dockerfile").write_text(
        f"FROM {umoci_base}\n"
        "COPY hello.txt /srv/hello.txt\n"
        "RUN cat /srv/hello.txt /from-insert.txt > /srv/both && echo ran-on-umoci-base\n"
    )
    out = tmp_path / "out"
    state = tmp_path / "state"
    rc = main(
        ["build", "--progress", "plain", "--root", str(state), "--output", f"type=local,dest={out}", str(context)]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "ran-on-umoci-base" in err
    assert (out / "srv" / "both").read_text() == "hello from the context\ninserted by umoci\n"
    assert (out / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    assert os.readlink(out / "bin" / "sh") == "busybox"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # the state dir holds setuid binaries: private

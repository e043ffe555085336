"""ADD of remote sources through whole builds, against real servers on 127.0.0.1: a git repository served
by ``git daemon`` (cached while its ref stays on one commit, rebuilt when it moves) and an HTTP file with
``--checksum`` (a mismatch is one error line naming the URL, the expected and the actual digest)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from copy_helpers import make_context, ran, run_build, status_of
from git_server import commit_files, git, git_daemon

from helpers.httpserve import serve_http
from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.build.solver import BuildError

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None or shutil.which("git") is None:
    pytest.skip("needs root, runc and git (scripts/install-system-deps.sh)", allow_module_level=True)

PAYLOAD = b"tool v1\n"


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="addremote/busybox", rootfs=busybox_rootfs).reference


@pytest.fixture
def http_server() -> Iterator[str]:
    with serve_http(_Files) as url:
        yield url


def test_add_git_is_cached_by_commit(base: str, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    git("init", "-q", "--bare", "-b", "main", str(served / "lib.git"))
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    commit_files(work, {"pkg/mod.txt": "v1\n", "other.txt": "x\n"}, "one")
    git("push", "-q", str(served / "lib.git"), "main", cwd=work)
    with git_daemon(served) as url:
        add = f"ADD {url}/lib.git#main:pkg /opt/lib/"
        context = make_context(tmp_path / "ctx", f"FROM {base}\n{add}\nRUN cat /opt/lib/mod.txt\n", {})
        first, progress = run_build(context, tmp_path / "state")
        assert status_of(progress, add).startswith("MISS")
        _, progress = run_build(context, tmp_path / "state")
        assert status_of(progress, add) == "CACHED"
        commit_files(work, {"pkg/mod.txt": "v2\n"}, "two")
        git("push", "-q", str(served / "lib.git"), "main", cwd=work)
        second, progress = run_build(context, tmp_path / "state")
        assert status_of(progress, add).startswith("MISS") and ran(progress, "v2")  # the RUN ran again
        assert first.digest != second.digest


def test_add_checksum_verifies_the_download(base: str, http_server: str, tmp_path: Path) -> None:
    url = f"{http_server}/tool.bin"
    good = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    context = make_context(tmp_path / "ctx", f"FROM {base}\nADD --checksum={good} {url} /tool.bin\n", {})
    add = f"ADD --checksum={good} {url} /tool.bin"
    _, progress = run_build(context, tmp_path / "state")
    assert status_of(progress, add).startswith("MISS")
    _, progress = run_build(context, tmp_path / "state")
    assert status_of(progress, add) == "CACHED"  # keyed by the content digest, which --checksum pins
    bad = "sha256:" + "1" * 64
    (context / "Dockerfile").write_text(f"FROM {base}\nADD --checksum={bad} {url} /tool.bin\n")
    with pytest.raises(BuildError) as info:
        run_build(context, tmp_path / "state")
    message = str(info.value)
    assert "\n" not in message and "Dockerfile:2" in message
    assert f"digest mismatch for {url}: expected {bad}, got {good}" in message

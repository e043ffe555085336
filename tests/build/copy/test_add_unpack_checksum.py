"""``ADD --unpack`` (local archives unpacked unless false, downloads only when true) and ``ADD --checksum`` of a
git source (the commit hash or a prefix of it), against a real HTTP server and a real ``git daemon`` on
127.0.0.1."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from git_server import commit_files, git, git_daemon

from helpers.httpserve import serve_http
from lamina.build.context import SourceTree
from lamina.build.dockerfile import convert
from lamina.build.filecopy import CopyError, Downloads, apply_copy, copy_checksum
from lamina.build.ops import CopyStep
from lamina.oci import ContainerConfig, ImageConfig


def _tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"inside\n"
        info = tarfile.TarInfo("pkg/file.txt")
        info.size, info.mode = len(data), 0o640
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _tar_gz()


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(ARCHIVE)))
        self.end_headers()
        self.wfile.write(ARCHIVE)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[str]:
    with serve_http(_Files) as url:
        yield url


def _add(tmp_path: Path, source: str, dest: str, **kw: object) -> Path:
    ctx, rootfs = tmp_path / "ctx", tmp_path / "rootfs"
    ctx.mkdir(parents=True, exist_ok=True)
    rootfs.mkdir(parents=True, exist_ok=True)
    (ctx / "a.tar.gz").write_bytes(ARCHIVE)
    apply_copy(CopyStep(sources=(source,), dest=dest, is_add=True, **kw), source_root=ctx,  # type: ignore[arg-type]
               rootfs=rootfs)
    return rootfs


def test_the_frontend_reads_unpack_as_a_boolean() -> None:
    def resolve(ref: str, platform: object) -> ImageConfig:
        return ImageConfig(config=ContainerConfig({}))

    graph = convert("FROM b\nADD --unpack=false a.tar.gz /x/\nADD --unpack https://h/a.tgz /y/\nADD a.tgz /z/\n",
                    resolve_base=resolve, platform="linux/amd64", build_platform="linux/amd64")
    steps = [s for s in graph.stage(graph.target).steps if isinstance(s, CopyStep)]
    assert [s.unpack for s in steps] == [False, True, None]


def test_a_local_archive_is_unpacked_unless_unpack_false(tmp_path: Path) -> None:
    rootfs = _add(tmp_path / "default", "a.tar.gz", "/x/")
    assert (rootfs / "x/pkg/file.txt").read_text() == "inside\n"
    rootfs = _add(tmp_path / "off", "a.tar.gz", "/x/", unpack=False)
    assert (rootfs / "x/a.tar.gz").read_bytes() == ARCHIVE and not (rootfs / "x/pkg").exists()


def test_a_download_is_unpacked_only_with_unpack_true(tmp_path: Path, http_server: str) -> None:
    rootfs = _add(tmp_path / "default", f"{http_server}/dl/a.tar.gz", "/d/")
    assert (rootfs / "d/a.tar.gz").read_bytes() == ARCHIVE
    rootfs = _add(tmp_path / "on", f"{http_server}/dl/a.tar.gz", "/d/", unpack=True)
    assert (rootfs / "d/pkg/file.txt").read_text() == "inside\n" and not (rootfs / "d/a.tar.gz").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed (scripts/install-system-deps.sh)")
def test_git_checksum_is_the_commit_or_a_prefix(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    git("init", "-q", "--bare", "-b", "main", str(served / "app.git"))
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    first = commit_files(work, {"a.txt": "one\n"}, "one")
    git("push", "-q", str(served / "app.git"), "main", cwd=work)
    with git_daemon(served) as url:
        source = f"{url}/app.git#main"
        rootfs = _add(tmp_path / "full", source, "/src/", checksum=first)
        assert (rootfs / "src/a.txt").read_text() == "one\n"
        _add(tmp_path / "prefix", source, "/src/", checksum=first[:7])
        wrong = ("0" if first[0] != "0" else "1") + first[1:7]
        with pytest.raises(CopyError, match=f"--checksum={wrong} does not match commit {first}"):
            _add(tmp_path / "wrong", source, "/src/", checksum=wrong)
        with Downloads() as downloads, pytest.raises(CopyError, match="does not match commit"):  # before the cache
            copy_checksum(CopyStep(sources=(source,), dest="/src/", is_add=True, checksum=wrong),
                          SourceTree(tmp_path), downloads=downloads)

"""ADD: local archives unpacked (by content, any compression), URLs downloaded from a loopback server."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
import zstandard
from ctx_helpers import listing, make_tree

from helpers.httpserve import serve_http
from lamina.build.context import SourceTree
from lamina.build.filecopy import CopyError, Downloads, apply_copy, copy_checksum
from lamina.build.ops import CopyStep


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("pkg")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o750, 1_600_000_000
        tar.addfile(d)
        f = tarfile.TarInfo("pkg/bin/tool")
        payload = b"#!/bin/sh\necho tool\n"
        f.size, f.mode, f.mtime, f.uid, f.gid = len(payload), 0o755, 1_600_000_123, 1001, 1002
        tar.addfile(f, io.BytesIO(payload))
        s = tarfile.TarInfo("pkg/current")
        s.type, s.linkname = tarfile.SYMTYPE, "bin/tool"
        tar.addfile(s)
        h = tarfile.TarInfo("pkg/bin/tool2")
        h.type, h.linkname = tarfile.LNKTYPE, "pkg/bin/tool"
        tar.addfile(h)
    return buf.getvalue()


COMPRESSORS = {
    "plain": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_add_unpacks_local_archives_detected_by_content(tmp_path: Path, kind: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "payload.bin").write_bytes(COMPRESSORS[kind](_archive()))  # the name says nothing
    rootfs = make_tree(tmp_path / "rootfs", {"opt/old": "kept"})
    apply_copy(CopyStep(sources=("payload.bin",), dest="/opt", is_add=True), source_root=ctx, rootfs=rootfs)
    assert listing(rootfs / "opt") == {"old": "f:kept", "pkg": "d", "pkg/bin": "d", "pkg/current": "l:bin/tool",
                                       "pkg/bin/tool": "f:#!/bin/sh\necho tool\n",
                                       "pkg/bin/tool2": "f:#!/bin/sh\necho tool\n"}
    tool = (rootfs / "opt/pkg/bin/tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o755 and tool.st_mtime_ns == 1_600_000_123_000_000_000
    assert tool.st_ino == (rootfs / "opt/pkg/bin/tool2").stat().st_ino
    pkg = (rootfs / "opt/pkg").stat()
    assert stat.S_IMODE(pkg.st_mode) == 0o750 and pkg.st_mtime_ns == 1_600_000_000_000_000_000
    if os.geteuid() == 0:
        assert (tool.st_uid, tool.st_gid) == (1001, 1002)  # owners come from the archive


def test_copy_does_not_unpack_and_add_copies_non_archives(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.tar.gz").write_bytes(gzip.compress(_archive()))
    (ctx / "fake.tar.gz").write_bytes(b"not an archive at all")
    (ctx / "empty.tar").write_bytes(b"\0" * 1024)  # a tar with no entries is not an archive (Go: io.EOF)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    apply_copy(CopyStep(sources=("a.tar.gz",), dest="/c/"), source_root=ctx, rootfs=rootfs)
    assert os.listdir(rootfs / "c") == ["a.tar.gz"]
    apply_copy(CopyStep(sources=("fake.tar.gz", "empty.tar"), dest="/d/", is_add=True), source_root=ctx, rootfs=rootfs)
    assert sorted(os.listdir(rootfs / "d")) == ["empty.tar", "fake.tar.gz"]


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, tuple[bytes, dict[str, str]]]] = {}
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        found = self.files.get(self.path)
        if found is None:
            self.send_error(404, "Not Found")
            return
        body, headers = found
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.hits.clear()
    _Handler.files = {
        "/files/tool.tar.gz": (gzip.compress(_archive()), {"Last-Modified": formatdate(1_500_000_000, usegmt=True)}),
        "/dl?id=7": (b"disposition", {"Content-Disposition": 'attachment; filename="report.txt"'}),
        "/": (b"index", {}),
    }
    with serve_http(_Handler) as url:
        yield url


def test_add_url_downloads_without_unpacking(tmp_path: Path, server: str) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (tmp_path / "dl").mkdir()
    with Downloads(tmp_path / "dl") as downloads:
        url = f"{server}/files/tool.tar.gz"
        apply_copy(CopyStep(sources=(url,), dest="/in/", is_add=True), source_root=None, rootfs=rootfs,
                   downloads=downloads)
        apply_copy(CopyStep(sources=(url,), dest="/renamed", is_add=True), source_root=None, rootfs=rootfs,
                   downloads=downloads)
        apply_copy(CopyStep(sources=(f"{server}/dl?id=7", f"{server}/"), dest="/named/", is_add=True),
                   source_root=None, rootfs=rootfs, downloads=downloads)
    got = rootfs / "in/tool.tar.gz"
    assert got.read_bytes() == _Handler.files["/files/tool.tar.gz"][0]  # kept compressed, not unpacked
    st = got.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 1_500_000_000 * 1_000_000_000
    assert (rootfs / "renamed").read_bytes() == got.read_bytes()
    assert sorted(os.listdir(rootfs / "named")) == ["download", "report.txt"]
    assert _Handler.hits["/files/tool.tar.gz"] == 1  # fetched once per build


def test_add_url_checksum_is_verified(tmp_path: Path, server: str) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    url = f"{server}/dl?id=7"
    good = "sha256:" + hashlib.sha256(b"disposition").hexdigest()
    with Downloads() as downloads:
        apply_copy(CopyStep(sources=(url,), dest="/ok", is_add=True), source_root=None, rootfs=rootfs,
                   downloads=downloads, checksum=good)
        assert (rootfs / "ok").read_bytes() == b"disposition"
        bad = "sha256:" + "0" * 64
        with pytest.raises(CopyError, match=re.escape(f"digest mismatch for {url}: expected {bad}, got {good}")):
            apply_copy(CopyStep(sources=(url,), dest="/bad", is_add=True), source_root=None, rootfs=rootfs,
                       downloads=downloads, checksum=bad)
        with pytest.raises(CopyError, match="invalid --checksum"):
            downloads.get(url, checksum="md5:abc")
    assert not (rootfs / "bad").exists()


def test_add_url_http_error_is_named(tmp_path: Path, server: str) -> None:
    with Downloads() as downloads, pytest.raises(CopyError, match=r"failed to fetch .*/missing: HTTP 404"):
        downloads.get(f"{server}/missing")


def test_copy_checksum_covers_urls_heredocs_and_context(tmp_path: Path, server: str) -> None:
    ctx = SourceTree(make_tree(tmp_path / "ctx", {"a.txt": "a"}))
    url = f"{server}/dl?id=7"
    with Downloads() as downloads:
        step = CopyStep(sources=("a.txt", url), dest="/x/", is_add=True, heredocs=(("h", "body"),))
        first = copy_checksum(step, ctx, downloads=downloads)
        assert copy_checksum(step, ctx, downloads=downloads) == first
        _Handler.files["/dl?id=7"] = (b"changed upstream", {})
        with Downloads() as fresh:
            assert copy_checksum(step, ctx, downloads=fresh) != first
        other_heredoc = CopyStep(sources=("a.txt", url), dest="/x/", is_add=True, heredocs=(("h", "other"),))
        assert copy_checksum(other_heredoc, ctx, downloads=downloads) != first
    with pytest.raises(CopyError, match="COPY failed: file not found in build context"):
        copy_checksum(CopyStep(sources=("missing",), dest="/x"), ctx)

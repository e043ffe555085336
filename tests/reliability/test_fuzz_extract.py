"""Property-based fuzzing (hypothesis) of the layer extractor (lamina.build.worker.extract and its tar
reader) on crafted tars: hostile names (``..``, absolute, NUL-free but odd), symlinks then entries through
them, hard links anywhere, whiteouts, devices, pax headers, duplicate names; then the same bytes corrupted
or cut short, and random bytes as gzip or zstd. Every layer either unpacks or raises ``LayerError`` (the
documented exception); either way nothing is written outside the destination, and a refused layer leaves
no destination and no temp directory behind. Needs root (whiteouts are 0/0 character devices)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lamina.build.worker.extract import LayerError, extract_layer
from lamina.oci import mediatypes as mt

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (whiteouts are device nodes); CI runs as root")

NAMES = ["a", "b", "a/b", "a/b/c", "d/", "./e", "/abs", "../up", "a/../../up", "link", "link/x", "hl",
         ".wh.a", "a/.wh..wh..opq", ".wh..wh..opq", "./", ".", "", "x" * 120, "sp ace", "é/ü", "a//b"]
TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.FIFOTYPE, b"x", b"g", b"S"]
Entry = tuple[str, bytes, str, bytes, int, dict[str, str]]
TARGETS = ["a", "../outside", "/etc", "a/b", "link", "missing", "", "."]

entries = st.tuples(st.sampled_from(NAMES), st.sampled_from(TYPES), st.sampled_from(TARGETS),
                    st.binary(max_size=64), st.sampled_from([0o644, 0o755, 0o4755, 0o000, 0o7777]),
                    st.dictionaries(st.sampled_from(["path", "linkpath", "size", "SCHILY.xattr.user.k",
                                                     "SCHILY.xattr.trusted.overlay.opaque", "mtime", "uid"]),
                                    st.sampled_from(["a", "../x", "-1", "12", "1e999", "nan", "y", "/abs"]),
                                    max_size=2))


def build_tar(items: list[Entry], fmt: int) -> bytes | None:
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
            for name, kind, target, data, mode, pax in items:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.mode = mode
                info.linkname = target if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                info.pax_headers = pax if fmt == tarfile.PAX_FORMAT else {}
                payload = data if kind == tarfile.REGTYPE else b""
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    except (ValueError, tarfile.TarError, UnicodeError):
        return None  # tarfile refuses to write it at all
    return out.getvalue()


def _unpack(tmp: Path, data: bytes, media_type: str) -> None:
    """Extract into tmp/box/dest; only LayerError may escape; nothing may appear outside box/dest."""
    box = tmp / "box"
    box.mkdir()
    (tmp / "outside").mkdir(exist_ok=True)
    dest = box / "dest"
    try:
        extract_layer(io.BytesIO(data), media_type, dest, expected_diff_id=None)
    except LayerError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert os.listdir(box) == [], os.listdir(box)  # neither dest nor the temp dir is left
    else:
        assert os.listdir(box) == ["dest"], os.listdir(box)
    assert os.listdir(tmp / "outside") == [] and not (tmp / "up").exists() and not (box / "up").exists()


@given(st.lists(entries, min_size=1, max_size=6), st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
       st.data())
def test_crafted_tars_unpack_or_raise_layer_error(tmp_path_factory: pytest.TempPathFactory, items: list[Entry],
                                                  fmt: int, data: st.DataObject) -> None:
    raw = build_tar(items, fmt)
    if raw is None:
        return
    tmp = tmp_path_factory.mktemp("unpack")
    (tmp / "whole").mkdir()
    _unpack(tmp / "whole", raw, mt.OCI_LAYER)
    # the same bytes corrupted at a few places, or cut short
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    (tmp / "damaged").mkdir()
    _unpack(tmp / "damaged", bytes(damaged[:cut]), mt.OCI_LAYER)


@given(st.binary(max_size=400), st.sampled_from([mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD, mt.OCI_LAYER]))
@example(b"\x1f\x8b\x08\x00" + b"\x00" * 20, mt.OCI_LAYER_GZIP)
@example(b"\x28\xb5\x2f\xfd" + b"\x00" * 20, mt.OCI_LAYER_ZSTD)
def test_random_bytes_as_compressed_layers_raise_layer_error(tmp_path_factory: pytest.TempPathFactory,
                                                             raw: bytes, media_type: str) -> None:
    _unpack(tmp_path_factory.mktemp("random"), raw, media_type)

"""extract_layer and the layer root: every spelling of a root entry is accepted (umoci, ``tar -C dir .``
and Go tools write one), its metadata is ignored as containerd ignores it, and every real escape is
still refused. Names are written byte for byte (``tarfile`` would add a slash to a directory's name)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY

from lamina.build.worker import LayerError, extract_layer
from lamina.oci import mediatypes

pytestmark = ROOT_ONLY  # chown of the entries needs root

PLAIN = mediatypes.OCI_LAYER


def header(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, mode: int = 0o644, uid: int = 0, linkname: str = ""
) -> bytes:
    """One ustar member whose name field is exactly ``name``, then its data padded to 512 bytes."""
    info = tarfile.TarInfo("placeholder")
    info.type, info.mode, info.uid, info.gid, info.size, info.linkname = kind, mode, uid, uid, len(data), linkname
    info.mtime = 1_000_000
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[0:100] = name.encode().ljust(100, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + data + bytes(-len(data) % 512)


def layer(*members: bytes) -> tuple[io.BytesIO, str]:
    raw = b"".join(members) + bytes(1024)
    return io.BytesIO(raw), "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("root", ["/", "./", ".", ".//", "/.", "//", "/./", "././"])
def test_every_spelling_of_the_root_entry_is_accepted(tmp_path: Path, root: str) -> None:
    stream, diff_id = layer(
        header(root, tarfile.DIRTYPE, mode=0o777, uid=4321),
        header("etc/", tarfile.DIRTYPE, mode=0o755),
        header("etc/hostname", data=b"box\n"),
        header("./bin/tool", data=b"#!/bin/sh\n", mode=0o755),
    )
    dest = tmp_path / "layer"
    assert str(extract_layer(stream, PLAIN, dest, expected_diff_id=diff_id)) == diff_id
    assert (dest / "etc" / "hostname").read_bytes() == b"box\n"
    assert (dest / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    st = dest.stat()  # the root entry's owner and mode are not applied (containerd: "resolved to root")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert sorted(os.listdir(dest)) == ["bin", "etc"]


def test_an_opaque_marker_at_the_root_still_marks_the_root(tmp_path: Path) -> None:
    stream, diff_id = layer(header("./", tarfile.DIRTYPE), header("./.wh..wh..opq"), header("./kept", data=b"k"))
    extract_layer(stream, PLAIN, tmp_path / "layer", expected_diff_id=diff_id)
    assert os.getxattr(tmp_path / "layer", "trusted.overlay.opaque") == b"y"
    assert os.listdir(tmp_path / "layer") == ["kept"]


ESCAPES: dict[str, tuple[list[bytes], str]] = {
    "absolute file": ([header("/", tarfile.DIRTYPE), header("/etc/evil", data=b"x")], r"'/etc/evil': absolute path"),
    "absolute dir": ([header("//etc/", tarfile.DIRTYPE)], r"'//etc/?': absolute path"),
    "absolute after dot": ([header("/./etc/evil", data=b"x")], r"'/\./etc/evil': absolute path"),
    "dotdot from the root": ([header("/../evil", data=b"x")], r"'/\.\./evil': path contains '\.\.'"),
    "dotdot from dot": ([header("./../evil", data=b"x")], r"'\./\.\./evil': path contains '\.\.'"),
    "dotdot climbing out": ([header("a/../../evil", data=b"x")], r"'a/\.\./\.\./evil': path contains '\.\.'"),
    "bare dotdot dir": ([header("../", tarfile.DIRTYPE)], r"'\.\./?': path contains '\.\.'"),
    "root as a file": ([header(".", data=b"x")], r"'\.': the layer root can only be a directory"),
    "root as a symlink": ([header("./", tarfile.SYMTYPE, linkname="/etc")], r"'\./': the layer root can only be"),
    "root as a hard link": (
        [header("f", data=b"x"), header("/", tarfile.LNKTYPE, linkname="f")],
        r"'/': the layer root can only be a directory",
    ),
    "hard link to the root": ([header("h", tarfile.LNKTYPE, linkname="./")], r"'h': hard link to the layer root"),
    "hard link absolute": ([header("h", tarfile.LNKTYPE, linkname="/etc/shadow")], r"'h': hard link to '/etc/shadow'"),
    "hard link up": ([header("h", tarfile.LNKTYPE, linkname="./../../etc/shadow")], r"'h': hard link to"),
    "whiteout of the root": ([header(".wh..")], r"'\.wh\.\.': whiteout without a name"),
    "whiteout of the parent": ([header("./.wh...")], r"'\./\.wh\.\.\.': whiteout without a name"),
    "whiteout through dotdot": ([header("a/../.wh.etc")], r"path contains '\.\.'"),
    "symlink then through it": (
        [header("./", tarfile.DIRTYPE), header("up", tarfile.SYMTYPE, linkname="/"), header("up/etc/evil", data=b"x")],
        r"'up/etc/evil': its parent 'up' is a symlink",
    ),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escapes_beside_a_root_entry_are_refused(tmp_path: Path, case: str) -> None:
    members, message = ESCAPES[case]
    stream, diff_id = layer(*members)
    work = tmp_path / "work"
    work.mkdir()
    before = set(os.listdir("/etc"))
    with pytest.raises(LayerError, match=message):
        extract_layer(stream, PLAIN, work / "layer", expected_diff_id=diff_id)
    assert os.listdir(work) == []
    assert set(os.listdir("/etc")) == before
    assert not (tmp_path / "evil").exists()

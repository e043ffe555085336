"""The parity harness itself: dumping layouts, flattening layers, comparing and reporting (no builds)."""

from __future__ import annotations

import copy
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from helpers import parity_base
from helpers.images import write_layout
from helpers.parity import compare, render
from helpers.parity_base import BASE_ENTRIES_FILE, busybox_base_image, busybox_base_layer
from helpers.parity_case import CORPUS, all_cases, load_case
from helpers.parity_dump import Dump, dump_layout, flatten_layers, layer_entries, load_dump


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    """(name, kind, content or link target) -> an uncompressed ustar layer, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(content)
                tar.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size, info.mode = len(data), 0o644 if not name.rsplit("/", 1)[-1].startswith(".wh.") else 0
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_case_compared_with_itself_is_identical() -> None:
    expected = load_dump(CORPUS / "user-groups" / "expected")
    sections = compare(expected, copy.deepcopy(expected))
    assert render(sections) == "identical"


def test_multi_platform_dump_folders_load_per_platform() -> None:
    dump = load_dump(CORPUS / "platform-multi" / "expected")
    assert dump.index is not None and sorted(dump.images) == ["linux_amd64", "linux_arm64"]


def test_differences_name_what_and_where() -> None:
    expected = load_dump(CORPUS / "hardlinks" / "expected")
    mine = copy.deepcopy(expected)
    image = mine.images["linux_amd64"]
    image.layers[1]["entries"][0]["mode"] = "0700"
    image.config = {"os": image.config["os"], **{k: v for k, v in image.config.items() if k != "os"}}
    image.config["config"]["User"] = "app"
    image.manifest["layers"][1]["digest"] = "sha256:" + "0" * 64  # masked: digests follow from mtimes
    image.rootfs["/c"]["uid"] = 7
    report = render(compare(mine, expected), max_lines=100)
    assert "layer 1 (RUN /bin/sh -c mkdir /data" in report and '"mode": "0700"' in report
    assert ".: same keys, other order" in report
    assert 'config.User: unexpected "app"' in report
    assert '/c: uid got 7, expected 0' in report
    assert "manifest" not in report
    strict = render(compare(mine, expected, strict=True), max_lines=100)
    assert "layers[1].digest" in strict


def test_the_report_is_bounded() -> None:
    expected = load_dump(CORPUS / "opaque-dirs" / "expected")
    mine = copy.deepcopy(expected)
    mine.images["linux_amd64"].rootfs.clear()
    report = render(compare(mine, expected), max_lines=5)
    assert report.splitlines()[0].endswith("difference line(s)")
    assert len([line for line in report.splitlines() if line.startswith("  /")]) == 5
    assert "more in this section" in report


def test_flatten_honours_whiteouts_hardlinks_and_replacements() -> None:
    lower = _tar(("d/", "dir", b""), ("d/a", "file", "a"), ("d/b", "file", "b"), ("f", "file", "f"), ("g", "file", "g"))
    upper = _tar(
        ("d/", "dir", b""), ("d/.wh.a", "file", b""), ("f/", "dir", b""), ("f/x", "file", "x"),
        ("h", "file", "h"), ("h2", "hardlink", "h"),
    )  # fmt: skip
    opaque = _tar(("d/", "dir", b""), ("d/.wh..wh..opq", "file", b""), ("d/new", "file", "n"))
    layers = [{"entries": layer_entries(raw)[0]} for raw in (lower, upper, opaque)]
    rootfs, warnings = flatten_layers(layers)
    assert warnings == []
    assert sorted(rootfs) == ["/d", "/d/new", "/f", "/f/x", "/g", "/h", "/h2"]
    assert rootfs["/f"]["type"] == "dir" and rootfs["/h"]["links"] == ["/h", "/h2"]
    entries, tail = layer_entries(upper)
    assert entries[0]["name"] == "d/" and entries[1]["mode"] == "0000" and tail > 2  # tarfile pads records


def test_the_rebuilt_base_layer_matches_the_corpus(tmp_path: Path) -> None:
    image = busybox_base_image()
    layout = write_layout(tmp_path / "layout", image.manifest, image.blobs()[:-1])
    dump, warnings = dump_layout(layout)
    assert isinstance(dump, Dump) and warnings == []
    (mine,) = dump.images.values()
    recorded = json.loads(BASE_ENTRIES_FILE.read_text())
    assert mine.layers[0]["entries"] == recorded["entries"]
    assert mine.layers[0]["tar_tail_blocks"] == 7
    want = load_dump(CORPUS / "run-mountpoints" / "expected").images["linux_amd64"].layers[0]
    assert {k: v for k, v in mine.layers[0].items() if k not in ("digest", "size", "diff_id")} == {
        k: v for k, v in want.items() if k not in ("digest", "size", "diff_id", "entry_count")
    }


def test_build_flags_come_from_build_txt() -> None:
    cases = {case.name: case for case in all_cases()}
    assert len(cases) == 16
    secret = load_case(CORPUS / "mount-tmpfs-secret")
    assert secret.lamina_flags("127.0.0.1:5000") == [
        "--build-arg", "BASE=127.0.0.1:5000/base/busybox:latest",
        "--secret", f"id=token,src={CORPUS / 'mount-tmpfs-secret' / 'secret-token.txt'}",
    ]  # fmt: skip
    assert cases["platform-multi"].platforms == "linux/amd64,linux/arm64"
    assert cases["platform-qemu"].base_repositories() == {"pub-parity/busybox-multi"}
    assert cases["copy-link"].build_args == (("BASE", "localhost:5050/base/busybox:latest"),)  # first build only


def test_the_base_falls_back_to_the_pinned_busybox_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host whose busybox-static is another version still gets the corpus's binary (from the .deb)."""
    other = tmp_path / "busybox"
    other.write_bytes(b"not the corpus's busybox")
    monkeypatch.setattr(parity_base, "BUSYBOX_BINARY", other)
    layer = busybox_base_layer()
    entries, _ = layer_entries(gzip.decompress(layer.data))
    recorded = json.loads(BASE_ENTRIES_FILE.read_text())
    assert entries == recorded["entries"]

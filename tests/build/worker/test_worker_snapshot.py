"""Snapshotters: overlay mounts and the copying fallback, held to one behavioural suite.

Each test runs against both implementations (design.md habit 8) and checks the layer the step's
diff produces, through ``write_layer``, as the solver will use it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from worker_helpers import ROOT_ONLY, tar_members, tar_names

from lamina.build.worker import (
    CopySnapshotter,
    LayerStore,
    OverlaySnapshotter,
    Snapshotter,
    cleanup_stale_snapshots,
    detect_snapshotter,
    write_layer,
)
from lamina.build.worker.snapshot import lookup_in_stack

pytestmark = ROOT_ONLY

EPOCH = 1_700_000_000
KINDS: dict[str, Callable[[Path], Snapshotter]] = {"overlay": OverlaySnapshotter, "copy": CopySnapshotter}


@pytest.fixture(params=sorted(KINDS))
def snapshotter(request: pytest.FixtureRequest, tmp_path: Path) -> Snapshotter:
    return KINDS[request.param](tmp_path / "state")


@pytest.fixture
def base(tmp_path: Path, rootfs_dir: Path) -> Path:
    """The busybox rootfs as an unpacked layer in a LayerStore (what a pulled base image becomes)."""
    (rootfs_dir / "etc" / "app.conf").write_text("a=1\n")
    (rootfs_dir / "home" / "app" / "notes").write_text("n")
    blob = write_layer(rootfs_dir, tmp_path / "blobs", source_date_epoch=EPOCH)
    store = LayerStore(tmp_path / "state")
    return store.unpack(blob.path, blob.media_type, blob.diff_id)


def layer_entries(upper: Path, tmp_path: Path) -> list[str]:
    return tar_names(write_layer(upper, tmp_path / "out", source_date_epoch=EPOCH).path)


def test_changes_become_a_layer_with_whiteouts(snapshotter: Snapshotter, base: Path, tmp_path: Path) -> None:
    with snapshotter.prepare([base], mountpoints=()) as snap:
        root = snap.rootfs
        assert (root / "bin" / "busybox").is_file()
        os.unlink(root / "bin" / "gzip")
        with open(root / "etc" / "app.conf", "a") as fh:
            fh.write("b=2\n")
        (root / "new" / "dir").mkdir(parents=True)
        (root / "new" / "dir" / "f").write_text("f")
    entries = layer_entries(snap.upper, tmp_path)
    assert entries == ["bin", "bin/.wh.gzip", "etc", "etc/app.conf", "new", "new/dir", "new/dir/f"]
    assert not (snap.rootfs / "bin").exists()  # unmounted / thrown away
    snap.discard()
    assert not snap.upper.exists()
    assert os.lstat(base / "bin" / "gzip")  # the lower is untouched


def test_replaced_directory_is_opaque(snapshotter: Snapshotter, base: Path, tmp_path: Path) -> None:
    with snapshotter.prepare([base], mountpoints=()) as snap:
        for child in (snap.rootfs / "home" / "app").iterdir():
            child.unlink()
        (snap.rootfs / "home" / "app").rmdir()
        (snap.rootfs / "home" / "app").mkdir()
        (snap.rootfs / "home" / "app" / "fresh").write_text("x")
    entries = layer_entries(snap.upper, tmp_path)
    assert entries == ["home", "home/app", "home/app/.wh..wh..opq", "home/app/fresh"]
    snap.discard()


def test_missing_mountpoints_stay_out_of_the_layer(snapshotter: Snapshotter, base: Path, tmp_path: Path) -> None:
    assert not (base / "etc" / "hosts").exists()
    with snapshotter.prepare([base]) as snap:
        assert (snap.rootfs / "etc" / "hosts").is_file()
        assert (snap.rootfs / "etc" / "resolv.conf").is_file()
        assert (snap.rootfs / "etc" / "passwd").is_file()  # the init layer merges, it does not hide
        (snap.rootfs / "etc" / "added").write_text("1")
    entries = layer_entries(snap.upper, tmp_path)
    assert entries == ["etc", "etc/added"]
    members = {m.name: m for m in tar_members(tmp_path / "out" / os.listdir(tmp_path / "out")[0])}
    assert members["etc"].mode == stat.S_IMODE(os.stat(base / "etc").st_mode)
    snap.discard()


def test_scratch_gets_mountpoints_and_an_empty_layer(snapshotter: Snapshotter, tmp_path: Path) -> None:
    # only the stubs BuildKit removes after a RUN (hosts, resolv.conf); runc's /proc, /sys, /dev are kept
    with snapshotter.prepare([]) as snap:
        assert sorted(os.listdir(snap.rootfs)) == ["etc"]
        assert sorted(os.listdir(snap.rootfs / "etc")) == ["hosts", "resolv.conf"]
    assert os.listdir(snap.upper) == []
    assert layer_entries(snap.upper, tmp_path) == []
    snap.discard()


def test_stack_order_whiteouts_and_opaque_lowers(snapshotter: Snapshotter, tmp_path: Path) -> None:
    bottom, middle, top = (tmp_path / n for n in ("bottom", "middle", "top"))
    for layer in (bottom, middle, top):
        layer.mkdir()
    (bottom / "d").mkdir()
    (bottom / "d" / "old").write_text("old")
    (bottom / "gone").write_text("gone")
    (bottom / "f").write_text("bottom")
    (middle / "f").write_text("middle")
    os.mknod(middle / "gone", stat.S_IFCHR, os.makedev(0, 0))
    (top / "d").mkdir()
    os.setxattr(top / "d", "trusted.overlay.opaque", b"y")
    (top / "d" / "new").write_text("new")
    with snapshotter.prepare([top, middle, bottom], mountpoints=()) as snap:
        assert (snap.rootfs / "f").read_text() == "middle"
        assert not os.path.lexists(snap.rootfs / "gone")
        assert sorted(os.listdir(snap.rootfs / "d")) == ["new"]
    snap.discard()
    assert lookup_in_stack([top, middle, bottom], "d/old") is None
    assert lookup_in_stack([top, middle, bottom], "gone") is None
    assert lookup_in_stack([top, middle, bottom], "f") == middle / "f"


def test_a_layer_repeated_in_the_stack_mounts_with_the_same_view(snapshotter: Snapshotter, tmp_path: Path) -> None:
    """Two steps that leave the same diff share one unpacked dir; overlayfs alone refuses it twice (ELOOP)."""
    same, middle, bottom = (tmp_path / n for n in ("same", "middle", "bottom"))
    for layer in (same, middle, bottom):
        layer.mkdir()
    (bottom / "f").write_text("bottom")
    (bottom / "kept").write_text("kept")
    (middle / "f").write_text("middle")
    os.mknod(middle / "g", stat.S_IFCHR, os.makedev(0, 0))
    (same / "g").write_text("same")
    with snapshotter.prepare([same, middle, same, bottom], mountpoints=()) as snap:
        assert (snap.rootfs / "f").read_text() == "middle"
        assert (snap.rootfs / "g").read_text() == "same"
        assert (snap.rootfs / "kept").read_text() == "kept"
    snap.discard()


def test_error_inside_the_step_cleans_up(snapshotter: Snapshotter, base: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), snapshotter.prepare([base]) as snap:
        (snap.rootfs / "x").write_text("x")
        raise RuntimeError("boom")
    assert not snap.upper.exists()
    assert os.path.ismount(snap.rootfs) is False
    assert not [p for p in (tmp_path / "state" / "snapshots").iterdir() if not p.name.startswith(".")]


def test_many_lowers_fit_in_one_mount(tmp_path: Path) -> None:
    deep = tmp_path / ("very-long-directory-name-" * 4) / "state"
    store_dirs = []
    for i in range(150):
        layer = deep / "layers" / f"{i:064x}"
        layer.mkdir(parents=True)
        (layer / f"file{i}").write_text(str(i))
        (layer / "shared").write_text(str(i))
        store_dirs.append(layer)
    lowers = list(reversed(store_dirs))  # top first: the last layer wins
    snapshotter = OverlaySnapshotter(deep)
    with snapshotter.prepare(lowers, mountpoints=()) as snap:
        assert (snap.rootfs / "shared").read_text() == "149"
        assert len([n for n in os.listdir(snap.rootfs) if n.startswith("file")]) == 150
    snap.discard()


def test_detect_prefers_overlay(tmp_path: Path) -> None:
    assert isinstance(detect_snapshotter(tmp_path / "state"), OverlaySnapshotter)
    assert not list((tmp_path / "state" / "snapshots").iterdir())


def test_view_reads_a_stack(snapshotter: Snapshotter, base: Path, tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    (top / "extra").write_text("e")
    (top / "bin").mkdir()
    os.mknod(top / "bin" / "gzip", stat.S_IFCHR, os.makedev(0, 0))
    with snapshotter.view([top, base]) as view:
        assert (view / "extra").read_text() == "e"
        assert (view / "bin" / "busybox").is_file()
        assert not os.path.lexists(view / "bin" / "gzip")
        assert not (view / "etc" / "hosts").exists()
    assert not os.path.ismount(view)
    assert not [p for p in (tmp_path / "state" / "snapshots").iterdir() if not p.name.startswith(".")]


def test_stale_snapshots_of_dead_builds_are_cleaned(base: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    snapshotter = OverlaySnapshotter(state)
    dead = snapshotter.prepare([base])
    dead.__enter__()  # a build killed inside its RUN: never exits the context
    (dead.dir / "owner").write_text("999999999")
    live = snapshotter.prepare([base])
    with live:
        assert cleanup_stale_snapshots(state) == 1
        assert os.path.ismount(live.rootfs)
    assert not os.path.ismount(dead.rootfs)
    assert not dead.dir.exists()
    assert live.upper.exists()
    live.discard()


def test_short_links_of_per_snapshot_dirs_do_not_pile_up(base: Path, tmp_path: Path) -> None:
    snapshotter = OverlaySnapshotter(tmp_path / "state")
    for _ in range(3):
        with snapshotter.prepare([base]) as snap:  # has an init layer: /etc/hosts is missing in base
            assert (snap.rootfs / "etc" / "hosts").exists()
        snap.discard()
    links = list((tmp_path / "state" / "l").iterdir())
    assert [os.readlink(link) for link in links] == [str(base)]


def _mount_options(target: Path) -> set[str]:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == os.fspath(target):
            return set(fields[3].split(","))
    raise AssertionError(f"{target} is not mounted")


def test_overlay_steps_mount_volatile_and_their_upper_stays_a_plain_diff(base: Path, tmp_path: Path) -> None:
    """fsync inside a step is a no-op (the step's upper is archived and fsynced by write_layer, or
    thrown away); the volatile marker lives in the work dir, never in the layer."""
    snapshotter = OverlaySnapshotter(tmp_path / "state")
    with snapshotter.prepare([base], mountpoints=()) as snap:
        assert _mount_options(snap.rootfs) & {"volatile", "fsync=volatile"}  # 6.x kernels show the latter
        with open(snap.rootfs / "synced", "wb") as fh:
            fh.write(b"data")
            os.fsync(fh.fileno())
        os.sync()
    assert layer_entries(snap.upper, tmp_path) == ["synced"]


def test_a_kernel_refusing_volatile_still_mounts_without_it(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Linux 5.10 overlayfs refuses the option: the mount is retried without it, once for good."""
    snapshotter = OverlaySnapshotter(tmp_path / "state")
    real = snapshotter._run_mount
    tried: list[bool] = []

    def old_kernel(options: str, count: int, target: Path) -> None:
        tried.append("volatile" in options.split(","))
        if tried[-1]:
            from lamina.build.worker.snapshot import SnapshotError

            raise SnapshotError("overlay mount of 1 layers failed: wrong fs type, bad option")
        real(options, count, target)

    monkeypatch.setattr(snapshotter, "_run_mount", old_kernel)
    for _ in range(2):
        with snapshotter.prepare([base], mountpoints=()) as snap:
            assert not _mount_options(snap.rootfs) & {"volatile", "fsync=volatile"}
            assert (snap.rootfs / "etc" / "app.conf").read_text() == "a=1\n"
        snap.discard()
    assert tried == [True, False, False]
    assert snapshotter.volatile is False

"""The cache-mount store: BuildKit's sharing modes (shared, private, locked) with flock, between threads of
one build and between processes sharing a state directory; seeds; the export/import seam for the remote
cache (entries, a tar of an instance, a lazy import the first time a key is needed)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from lamina.build.cachemounts import CacheMountError, CacheMountStore, Seed, cache_key

SRC = Path(__file__).resolve().parents[3] / "src"


def test_shared_mounts_use_one_directory_at_once(tmp_path: Path) -> None:
    store = CacheMountStore(tmp_path / "cm")
    with store.acquire("pip", "shared", Seed()) as a, store.acquire("pip", "shared", Seed()) as b:
        assert a.path == b.path
        (a.path / "wheel").write_text("w")
    with store.acquire("pip", "shared", Seed()) as c:
        assert (c.path / "wheel").read_text() == "w"  # kept between builds


def test_private_takes_a_free_directory_or_makes_one(tmp_path: Path) -> None:
    store = CacheMountStore(tmp_path / "cm")
    with store.acquire("npm", "private", Seed()) as first:
        (first.path / "mark").write_text("1")
        with store.acquire("npm", "private", Seed()) as second:
            assert second.path != first.path and not (second.path / "mark").exists()
        with store.acquire("npm", "shared", Seed()) as shared:  # not the one held exclusively
            assert shared.path == second.path
    with store.acquire("npm", "private", Seed()) as again:  # the first one is free again: reused
        assert again.path == first.path


def test_locked_waits_until_the_directory_is_free(tmp_path: Path) -> None:
    store = CacheMountStore(tmp_path / "cm")
    held = store.acquire("apt", "locked", Seed())
    with pytest.raises(CacheMountError, match=r"cache mount 'apt' \(sharing=locked\): still in use after 0.3s"):
        store.acquire("apt", "locked", Seed(), timeout=0.3)
    got: list[Path] = []
    waiter = threading.Thread(target=lambda: got.append(store.acquire("apt", "locked", Seed(), timeout=10).path))
    waiter.start()
    time.sleep(0.3)
    assert not got  # still waiting
    held.release()
    waiter.join(10)
    assert got == [held.path]


def test_a_lock_held_by_another_process_is_respected(tmp_path: Path) -> None:
    root = tmp_path / "cm"
    code = (
        "import sys; from pathlib import Path; from lamina.build.cachemounts import CacheMountStore, Seed\n"
        f"lease = CacheMountStore(Path({str(root)!r})).acquire('go', 'locked', Seed())\n"
        "print('held', flush=True); sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        store = CacheMountStore(root)
        with pytest.raises(CacheMountError, match="still in use"):
            store.acquire("go", "locked", Seed(), timeout=0.3)
        with store.acquire("go", "private", Seed()) as other:  # private makes its own instead of waiting
            assert other.path.name == "1"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    with store.acquire("go", "locked", Seed(), timeout=5) as lease:  # the lock died with the process
        assert lease.path.name == "0"


def test_seeds_make_distinct_caches_with_their_permissions(tmp_path: Path) -> None:
    store = CacheMountStore(tmp_path / "cm")
    plain = store.acquire("c", "shared", Seed())
    perms = store.acquire("c", "shared", Seed({"mkdir": [0o750, 1000, 1000]}, mode=0o750, uid=1000, gid=1000))
    assert plain.path != perms.path
    st = os.stat(perms.path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1000)
    st = os.stat(plain.path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    seed_dir = tmp_path / "seed"
    (seed_dir / "sub").mkdir(parents=True)
    (seed_dir / "sub" / "f").write_text("seeded")
    os.chmod(seed_dir, 0o711)
    with store.acquire("c", "shared", Seed({"from": "k", "source": "/seed"}, source=seed_dir)) as seeded:
        assert (seeded.path / "sub" / "f").read_text() == "seeded"
        assert stat.S_IMODE(os.stat(seeded.path).st_mode) == 0o711
    assert len({plain.key, perms.key, cache_key("c", Seed({"from": "k", "source": "/seed"}))}) == 3
    plain.release()
    perms.release()


def test_a_half_made_directory_is_never_used(tmp_path: Path) -> None:
    store = CacheMountStore(tmp_path / "cm")
    key_dir = tmp_path / "cm" / cache_key("x", Seed())
    (key_dir / ".0.999.dead").mkdir(parents=True)  # what a crash while seeding leaves
    (key_dir / ".0.999.dead" / "partial").write_text("p")
    with store.acquire("x", "shared", Seed()) as lease:
        assert lease.path == key_dir / "0" and os.listdir(lease.path) == []


class _Source:
    """A stand-in remote cache: one tar per key, counting how often it is asked."""

    def __init__(self, tars: dict[str, bytes]) -> None:
        self.tars = tars
        self.asked: list[tuple[str, str]] = []

    def open(self, cache_id: str, key: str) -> IO[bytes] | None:
        self.asked.append((cache_id, key))
        data = self.tars.get(key)
        return None if data is None else io.BytesIO(data)


def test_export_and_lazy_import_of_an_instance(tmp_path: Path) -> None:
    first = CacheMountStore(tmp_path / "runner1")
    with first.acquire("pip", "shared", Seed()) as lease:
        (lease.path / "pkgs").mkdir()
        (lease.path / "pkgs" / "a.whl").write_bytes(b"wheel")
        os.symlink("pkgs/a.whl", lease.path / "latest")
        os.link(lease.path / "pkgs" / "a.whl", lease.path / "pkgs" / "same.whl")
        os.chown(lease.path / "pkgs" / "a.whl", 1000, 1000)
        os.mknod(lease.path / "agent.sock", stat.S_IFSOCK | 0o600)  # left behind by a tool: not exported
    [entry] = first.entries()
    assert (entry.id, entry.instance) == ("pip", 0)
    buffer = io.BytesIO()
    first.write_tar(entry, buffer)

    source = _Source({entry.key: buffer.getvalue()})
    second = CacheMountStore(tmp_path / "runner2", source=source)
    assert second.entries() == [] and source.asked == []  # nothing is fetched before a RUN needs it
    with second.acquire("pip", "locked", Seed()) as lease:
        assert (lease.path / "pkgs" / "a.whl").read_bytes() == b"wheel"
        assert os.readlink(lease.path / "latest") == "pkgs/a.whl"
        assert os.stat(lease.path / "pkgs" / "a.whl").st_uid == 1000
        assert os.stat(lease.path / "pkgs" / "same.whl").st_ino == os.stat(lease.path / "pkgs" / "a.whl").st_ino
        assert not (lease.path / "agent.sock").exists()
    with second.acquire("pip", "shared", Seed()):
        pass
    assert source.asked == [("pip", entry.key)]  # once: the local instance serves from then on
    with second.acquire("other", "shared", Seed()) as empty:  # a key the remote does not have starts empty
        assert os.listdir(empty.path) == []

"""``COPY --link`` as BuildKit's MergeOp (tests/data/parity/copy-link): the layer is made on an empty root
and keyed without the parent, so a build on another base image hits it — in the local state and, on an
empty runner, in a remote cache — and the image carries the same blob, byte for byte; ``--link --chmod``
is not linked (it depends on the base), as in BuildKit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from copy_helpers import layer_digests, make_context, run_build, status_of

from helpers.images import busybox_image
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY --link a.txt /app/
COPY --link dir/ /app/dir/
COPY --link --chmod=640 a.txt /other/b.txt
RUN cat /app/a.txt /app/dir/c.txt > /app/copy.txt
"""


@pytest.fixture(scope="module")
def bases(lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[str, str]:
    """Two different base images: busybox, and busybox with an /app of its own (mode 0700)."""
    other = tmp_path_factory.mktemp("other-base") / "rootfs"
    shutil.copytree(busybox_rootfs, other, symlinks=True)
    (other / "app").mkdir(mode=0o700)
    (other / "app/base.txt").write_text("from the base\n")
    first = busybox_image(lamina_registry, name="link/busybox", rootfs=busybox_rootfs).reference
    second = busybox_image(lamina_registry, name="link/other", rootfs=other).reference
    return first, second


def test_link_layers_are_reused_byte_for_byte_on_another_base(bases: tuple[str, str], tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", DOCKERFILE, {"a.txt": "a\n", "dir/c.txt": "c\n"})
    state = tmp_path / "state"
    first, progress = run_build(context, state, build_args={"BASE": bases[0]})
    assert status_of(progress, "COPY --link a.txt /app/").startswith("MISS")
    second, progress = run_build(context, state, build_args={"BASE": bases[1]})
    assert status_of(progress, "COPY --link a.txt /app/") == "CACHED"
    assert status_of(progress, "COPY --link dir/ /app/dir/") == "CACHED"
    assert status_of(progress, "COPY --link --chmod=640 a.txt /other/b.txt").startswith("MISS")  # not linked
    assert layer_digests(first)[1:3] == layer_digests(second)[1:3]  # the two link layers: the same blobs
    assert [h.created_by for h in second.config.history[-4:]][:2] == [
        "COPY a.txt /app/ # buildkit", "COPY dir/ /app/dir/ # buildkit"]  # BuildKit's text drops --link


def test_link_layers_hit_in_a_remote_cache_on_an_empty_runner(
    bases: tuple[str, str], lamina_registry: RegistryProcess, tmp_path: Path
) -> None:
    context = make_context(tmp_path / "ctx", DOCKERFILE, {"a.txt": "remote\n", "dir/c.txt": "c2\n"})
    ref = f"{lamina_registry.host}/link/cache:min"
    first, _ = run_build(context, tmp_path / "s1", build_args={"BASE": bases[0]},
                         cache_to=(f"type=registry,ref={ref}",))
    second, progress = run_build(context, tmp_path / "s2", build_args={"BASE": bases[1]}, cache_from=(ref,),
                                 tags=(f"{lamina_registry.host}/link/app:other",), push=True)
    assert status_of(progress, "COPY --link a.txt /app/") == f"CACHED ({ref})"
    assert status_of(progress, "COPY --link dir/ /app/dir/") == f"CACHED ({ref})"
    assert layer_digests(first)[1:3] == layer_digests(second)[1:3]
    assert second.pushed  # the link blobs were pushed from the cache repository (mounted), not rebuilt

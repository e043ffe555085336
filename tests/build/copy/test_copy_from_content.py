"""``COPY --from=<stage>`` keyed by the content it copies, as BuildKit does: a builder stage that changed
without changing the copied files leaves the COPY and every step after it cached (the final stage does not
run again) — in the local state and on an empty runner through a remote cache; a fully cached build still
never solves the builder stage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from copy_helpers import layer_digests, make_context, ran, run_build, status_of

from helpers.images import busybox_image
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

DOCKERFILE = """\
FROM {base} AS builder
ARG DEP=1
RUN echo "$DEP" > /dep && echo binary > /app.bin && echo ran-builder
RUN echo ran-builder-two
FROM {base}
COPY --from=builder /app.bin /usr/bin/app
RUN cat /usr/bin/app > /copied && echo ran-final
"""
COPY = "COPY --from=builder /app.bin /usr/bin/app"


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="copyfrom/busybox", rootfs=busybox_rootfs).reference


def test_a_changed_builder_with_the_same_output_keeps_the_final_stage_cached(base: str, tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", DOCKERFILE.format(base=base), {})
    state = tmp_path / "state"
    first, progress = run_build(context, state)
    assert ran(progress, "ran-builder") and ran(progress, "ran-final")
    second, progress = run_build(context, state, build_args={"DEP": "2"})  # a dependency added to the builder
    assert ran(progress, "ran-builder") and not ran(progress, "ran-final")
    assert status_of(progress, COPY) == "CACHED"
    assert layer_digests(second) == layer_digests(first)
    third, progress = run_build(context, state, build_args={"DEP": "2"})  # warm: the builder is not solved
    assert "[builder" not in progress and status_of(progress, COPY) == "CACHED"
    assert third.digest == second.digest
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base).replace("echo binary", "echo changed"))
    _, progress = run_build(context, state, build_args={"DEP": "2"})  # other bytes copied: a real miss
    assert status_of(progress, COPY).startswith("MISS") and ran(progress, "ran-final")


@pytest.mark.parametrize("mode", ["min", "max"])
def test_content_keys_hit_on_an_empty_runner_through_a_remote_cache(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path, mode: str
) -> None:
    context = make_context(tmp_path / "ctx", DOCKERFILE.format(base=base), {})
    ref = f"{lamina_registry.host}/copyfrom/cache:{mode}"
    first, _ = run_build(context, tmp_path / "s1", cache_to=(f"type=registry,ref={ref},mode={mode}",))
    # an empty runner, the builder changed, the binary not: the final stage hits from the remote cache
    second, progress = run_build(context, tmp_path / "s2", cache_from=(ref,), build_args={"DEP": "2"},
                                 cache_to=(f"type=registry,ref={ref},mode={mode}",))
    assert ran(progress, "ran-builder") and not ran(progress, "ran-final")
    assert status_of(progress, COPY) == f"CACHED ({ref})"
    assert layer_digests(second) == layer_digests(first)
    # another empty runner, nothing changed: every step hits through the definition key's alias record,
    # the builder stage is never solved
    third, progress = run_build(context, tmp_path / "s3", cache_from=(ref,), build_args={"DEP": "2"})
    assert "[builder" not in progress and not ran(progress, "ran-final")
    assert status_of(progress, COPY) == f"CACHED ({ref})"
    assert layer_digests(third) == layer_digests(first)


CHAIN = """\
FROM {base} AS deps
RUN echo lib > /lib.txt && echo ran-deps
FROM {base} AS build
COPY --from=deps /lib.txt /lib.txt
RUN cat /lib.txt > /app.bin && echo ran-build
FROM {base}
COPY --from=build /app.bin /app
"""


@pytest.mark.parametrize("mode", ["min", "max"])
def test_an_unchanged_re_export_of_a_stage_chain_is_byte_identical(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path, mode: str
) -> None:
    """The stages a warm build does not solve still re-export their COPY --from records (content key and its
    alias) as the solving build wrote them: with ``mode=max`` byte-identical at once; with ``mode=min`` the
    first warm export adds the link records of the stages it predicted (the cold build solved them, so it
    never predicted them), and from then on an unchanged build re-exports byte-identical."""
    context = make_context(tmp_path / "ctx", CHAIN.format(base=base), {})
    ref = f"{lamina_registry.host}/copyfrom/chain:{mode}"
    to = (f"type=registry,ref={ref},mode={mode}",)
    cold, _ = run_build(context, tmp_path / "s1", cache_to=to)
    warm, progress = run_build(context, tmp_path / "s2", cache_from=(ref,), cache_to=to)
    assert "[deps" not in progress and "[build" not in progress
    assert warm.digest == cold.digest
    if mode == "max":
        assert warm.cache_exports[0].manifest_digest == cold.cache_exports[0].manifest_digest
    again, progress = run_build(context, tmp_path / "s3", cache_from=(ref,), cache_to=to)
    assert "[deps" not in progress and "[build" not in progress and again.digest == cold.digest
    assert again.cache_exports[0].manifest_digest == warm.cache_exports[0].manifest_digest


LINKED = """\
FROM {base} AS builder
ARG DEP=1
RUN echo "$DEP" > /dep && echo binary > /app.bin && echo ran-builder
FROM {base}
COPY --link --from=builder /app.bin /usr/bin/app
RUN cat /usr/bin/app > /copied && echo ran-final
"""
LINK_COPY = "COPY --link --from=builder /app.bin /usr/bin/app"


@pytest.mark.parametrize("mode", ["min", "max"])
def test_link_from_a_changed_builder_with_the_same_output_stays_cached(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path, mode: str
) -> None:
    """``COPY --link --from=<stage>``: the link layer is keyed by the files it copies too, so a builder that
    changed without changing them keeps the same layer blob and every later step cached — locally and on an
    empty runner — and a warm build on an empty runner still does not solve the builder."""
    context = make_context(tmp_path / "ctx", LINKED.format(base=base), {})
    ref = f"{lamina_registry.host}/copyfrom/linked:{mode}"
    to = (f"type=registry,ref={ref},mode={mode}",)
    first, progress = run_build(context, tmp_path / "s1", cache_to=to)
    assert ran(progress, "ran-final")
    second, progress = run_build(context, tmp_path / "s1", build_args={"DEP": "2"})
    assert ran(progress, "ran-builder") and not ran(progress, "ran-final")
    assert status_of(progress, LINK_COPY) == "CACHED" and layer_digests(second) == layer_digests(first)
    third, progress = run_build(context, tmp_path / "s2", cache_from=(ref,), build_args={"DEP": "2"}, cache_to=to)
    assert ran(progress, "ran-builder") and not ran(progress, "ran-final")
    assert status_of(progress, LINK_COPY) == f"CACHED ({ref})" and layer_digests(third) == layer_digests(first)
    fourth, progress = run_build(context, tmp_path / "s3", cache_from=(ref,), build_args={"DEP": "2"})
    assert "[builder" not in progress and not ran(progress, "ran-final")
    assert layer_digests(fourth) == layer_digests(first)

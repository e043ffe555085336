"""Round trips through real registries: cold build with --cache-to, local state wiped, rebuild with
--cache-from -> every step CACHED from the cache ref, no RUN executed, the same image digest.

Against lamina's registry and CNCF distribution (Debian's docker-registry), both started by the
fixtures; real runc, real overlay mounts. Transfer counters come from the registry client.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from cache_helpers import make_context, ran, run_build, step_status

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

APP = """\
FROM {base}
ENV GREETING=hello
WORKDIR /app
COPY a.txt /app/
RUN cat /app/a.txt > /app/out.txt && echo ran-one
COPY b.txt /app/
RUN echo "$GREETING $(cat /app/b.txt)" > /app/greeting.txt && echo ran-two
CMD ["cat", "/app/greeting.txt"]
"""

MULTI = """\
FROM {base} AS builder
RUN echo built > /artifact && echo ran-builder-one
RUN echo more >> /artifact && echo ran-builder-two
FROM {base}
COPY --from=builder /artifact /copied
RUN cat /copied > /copy && echo ran-final
"""


@pytest.fixture(scope="module", params=["lamina", "distribution"])
def registry(request: pytest.FixtureRequest) -> RegistryProcess:
    return request.getfixturevalue(f"{request.param}_registry")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def base(registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(registry, name="cachetest/busybox", rootfs=busybox_rootfs).reference


def _manifest(registry: RegistryProcess, repo: str, ref: str) -> dict:
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": f"{mt.OCI_MANIFEST}, {mt.OCI_INDEX}, {mt.DOCKER_MANIFEST_LIST}"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("mode", ["min", "max"])
def test_round_trip_every_step_cached_same_digest(
    registry: RegistryProcess, base: str, tmp_path: Path, mode: str
) -> None:
    context = make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    cache = f"{registry.host}/rt/{mode}:cache"
    image = f"{registry.host}/rt/{mode}:img"
    cold, text = run_build(context, tmp_path / "cold", cache_to=(f"type=registry,ref={cache},mode={mode}",),
                           tags=(image,), push=True)
    assert ran(text, "ran-one") and ran(text, "ran-two")
    assert cold.cache_exports[0].layers == 6 and cold.cache_exports[0].manifest_digest is not None
    manifest = _manifest(registry, f"rt/{mode}", "cache")
    assert manifest["config"]["mediaType"] == mt.BUILDKIT_CACHE_CONFIG and len(manifest["layers"]) == 6

    warm, text = run_build(context, tmp_path / "warm", cache_from=(cache,), tags=(image,), push=True)
    status = step_status(text)
    steps = [name for name in status if not name.startswith("FROM")]
    assert len(steps) == 5 and all(status[name] == f"CACHED ({cache})" for name in steps), text
    assert not ran(text, "ran-one") and not ran(text, "ran-two")
    assert warm.digest == cold.digest
    assert warm.transfer.downloaded["layer"] == 0  # lazy: manifests and configs only
    assert warm.transfer.uploaded["layer"] == 0 and warm.transfer.uploaded["config"] == 0
    assert not [p for p in (tmp_path / "warm" / "layers").iterdir() if not p.name.startswith(".")]


def test_unchanged_re_export_sends_only_the_manifest(registry: RegistryProcess, base: str, tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    cache = f"{registry.host}/rt/again:cache"
    first, _ = run_build(context, tmp_path / "one", cache_to=(f"type=registry,ref={cache},mode=max",))
    elsewhere = f"{registry.host}/rt/elsewhere:v1"  # another repository: every layer is cross-repo mounted
    second, _ = run_build(context, tmp_path / "two", cache_from=(cache,),
                          cache_to=(f"type=registry,ref={cache},mode=max",), tags=(elsewhere,), push=True)
    assert second.digest == first.digest
    assert second.cache_exports[0].manifest_digest == first.cache_exports[0].manifest_digest  # byte-identical
    assert second.cache_exports[0].outcomes == {"exists": 6}
    assert second.transfer.uploaded["layer"] == 0 and second.transfer.downloaded["layer"] == 0
    assert second.transfer.uploaded["config"] == len(second.config.to_bytes())  # the new image's config only


def test_multi_stage_min_versus_max(registry: RegistryProcess, base: str, tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx", MULTI.format(base=base), {})
    summaries = {}
    for mode in ("min", "max"):
        cache = f"{registry.host}/rt/multi-{mode}:cache"
        cold, _ = run_build(context, tmp_path / f"cold-{mode}", cache_to=(f"type=registry,ref={cache},mode={mode}",))
        summaries[mode] = cold.cache_exports[0]
        warm, text = run_build(context, tmp_path / f"warm-{mode}", cache_from=(cache,),
                               cache_to=(f"type=registry,ref={cache},mode={mode}",))
        assert warm.digest == cold.digest
        # the builder stage is not solved, yet the re-export still holds its records: byte-identical
        assert warm.cache_exports[0].manifest_digest == cold.cache_exports[0].manifest_digest
        status = step_status(text)
        final = [name for name in status if "ran-final" in name]
        assert status[final[0]] == f"CACHED ({cache})"
        assert not ran(text, "ran-final")
        # the COPY --from hits, so the builder stage is not solved at all, even with mode=min (as in BuildKit)
        assert not ran(text, "ran-builder-one") and not ran(text, "ran-builder-two"), text
    assert (summaries["min"].layers, summaries["max"].layers) == (3, 5)  # base+copy+run vs every step


def test_only_the_changed_last_step_pulls_the_layers_under_it(
    registry: RegistryProcess, base: str, tmp_path: Path
) -> None:
    context = make_context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    cache = f"{registry.host}/rt/last:cache"
    cold, _ = run_build(context, tmp_path / "cold", cache_to=(f"type=registry,ref={cache},mode=max",))
    text = (context / "Dockerfile").read_text().replace("&& echo ran-two", "&& echo ran-two-changed")
    (context / "Dockerfile").write_text(text)
    warm, progress = run_build(context, tmp_path / "warm", cache_from=(cache,))
    assert ran(progress, "ran-two-changed") and not ran(progress, "ran-one")
    manifest = _manifest(registry, "rt/last", "cache")
    sizes = {layer["digest"]: layer["size"] for layer in manifest["layers"]}
    cold_manifest = json.loads(cold.manifest)
    under = [layer["digest"] for layer in cold_manifest["layers"][:-1]]  # everything below the last RUN
    assert warm.transfer.downloaded["layer"] == sum(sizes[d] for d in under)

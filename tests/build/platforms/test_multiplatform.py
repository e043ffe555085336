"""End to end: ``lamina build --platform`` against a real lamina registry, real runc, real QEMU user emulation.

The base is the corpus's busybox-multi index (linux/amd64 + linux/arm64, made from Debian's busybox-static
packages by tests/helpers/multiarch.py). What comes out is looked at from outside: the index skopeo reads
from the registry, the OCI layout tar, the per-platform directories of ``type=local``, the progress lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from helpers.buildcli import build as _build
from helpers.images import busybox_image, skopeo
from helpers.multiarch import push_busybox_multi
from helpers.registries import RegistryProcess
from lamina.oci import host_platform

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)
if host_platform().architecture != "amd64":
    pytest.skip("these builds emulate arm64 on an amd64 host", allow_module_level=True)

CROSS = """\
ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG TARGETARCH TARGETPLATFORM BUILDPLATFORM
RUN mkdir /out && echo "$TARGETARCH $TARGETPLATFORM $BUILDPLATFORM" > /out/arch.txt && uname -m > /out/uname.txt

FROM scratch
COPY hello.txt /
COPY --from=build /out/ /
"""


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess) -> str:
    return push_busybox_multi(lamina_registry.host, repository="platforms/busybox-multi").reference


def _context(path: Path, dockerfile: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    (path / "hello.txt").write_text("hello\n")
    return path



def _status(err: str, name: str) -> list[str]:
    """The status lines (CACHED ..., DONE ..., MISS ...) of the vertex whose name starts with ``name``."""
    vertex = next(line.split(" ", 1)[0] for line in err.splitlines() if line.split(" ", 1)[-1].startswith(name))
    return [line.split(" ", 1)[1] for line in err.splitlines() if line.startswith(vertex + " ")][1:]


def test_two_platforms_give_one_index_pushed_oci_and_local(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str, lamina_registry: RegistryProcess
) -> None:
    ref = f"{lamina_registry.host}/platforms/cross:1"
    rc, digest, err = _build(
        capsys, _context(tmp_path / "ctx", CROSS), tmp_path / "state", "--build-arg", f"BASE={base}",
        "--platform", "linux/amd64,linux/arm64/v8", "-t", ref, "--push",
        "-o", f"type=oci,dest={tmp_path / 'image.tar'}", "-o", f"type=local,dest={tmp_path / 'out'}",
    )  # fmt: skip
    assert rc == 0, err
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}
    ]
    assert "annotations" not in index and all(set(m) == {"mediaType", "digest", "size", "platform"}
                                              for m in index["manifests"])
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout.encode()
    assert digest == "sha256:" + __import__("hashlib").sha256(raw).hexdigest()  # stdout: the index digest
    for entry, arch in zip(index["manifests"], ("amd64", "arm64"), strict=True):
        config = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                                   f"docker://{lamina_registry.host}/platforms/cross@{entry['digest']}").stdout)
        assert (config["architecture"], config["os"], config.get("variant")) == (arch, "linux", None)
    # the build stage ran on the build platform for each target: no emulation, TARGET* per platform
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["linux_amd64", "linux_arm64"]
    assert (out / "linux_amd64/arch.txt").read_text() == "amd64 linux/amd64 linux/amd64\n"
    assert (out / "linux_arm64/arch.txt").read_text() == "arm64 linux/arm64 linux/amd64\n"
    assert (out / "linux_arm64/uname.txt").read_text() == "x86_64\n"
    assert (out / "linux_arm64/hello.txt").read_text() == "hello\n"
    assert "[linux/arm64 build 2/2] RUN" in err and "[linux/amd64 stage-1 3/3] COPY --from=build" in err
    with tarfile.open(tmp_path / "image.tar") as tar:
        top = json.loads(tar.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
        assert [(d["mediaType"], d["digest"], d["annotations"]) for d in top] == [
            ("application/vnd.oci.image.index.v1+json", digest, {"org.opencontainers.image.ref.name": "1"})
        ]
        names = set(tar.getnames())
        assert {f"blobs/sha256/{m['digest'].split(':')[1]}" for m in index["manifests"]} <= names


def test_variants_normalised_into_index_config_and_args(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dockerfile = "FROM scratch\nARG TARGETPLATFORM TARGETVARIANT\nCOPY hello.txt /\n"
    rc, digest, err = _build(
        capsys, _context(tmp_path / "ctx", dockerfile), tmp_path / "state",
        "--platform", "linux/arm", "--platform", "linux/amd64/v1,linux/arm/v7",
        "-o", f"type=oci,dest={tmp_path / 'x.tar'}",
    )  # fmt: skip
    assert rc == 0, err
    with tarfile.open(tmp_path / "x.tar") as tar:
        def blob(digest: str) -> dict[str, object]:
            return json.loads(tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read())  # type: ignore[union-attr]

        index = blob(digest)
        manifests = index["manifests"]  # type: ignore[index]
        assert [m["platform"] for m in manifests] == [  # type: ignore[index]
            {"architecture": "arm", "os": "linux", "variant": "v7"}, {"architecture": "amd64", "os": "linux"}
        ]
        configs = [blob(blob(m["digest"])["config"]["digest"]) for m in manifests]  # type: ignore[index]
    assert [(c["architecture"], c.get("variant")) for c in configs] == [("arm", "v7"), ("amd64", None)]
    assert [c["history"][0]["created_by"] for c in configs] == [  # type: ignore[index]
        "ARG TARGETPLATFORM=linux/arm/v7 TARGETVARIANT=v7", "ARG TARGETPLATFORM=linux/amd64 TARGETVARIANT="
    ]


def test_a_stage_both_platforms_share_runs_once_even_without_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str
) -> None:
    dockerfile = (
        "ARG BASE\nFROM --platform=$BUILDPLATFORM ${BASE} AS tools\nRUN echo tool-built && echo t > /tool.txt\n"
        "FROM scratch\nCOPY --from=tools /tool.txt /\n"
    )
    rc, _, err = _build(
        capsys, _context(tmp_path / "ctx", dockerfile), tmp_path / "state", "--build-arg", f"BASE={base}",
        "--platform", "linux/amd64,linux/arm64", "--no-cache", "-o", f"type=local,dest={tmp_path / 'out'}",
    )  # fmt: skip
    assert rc == 0, err
    assert len(re.findall(r"^#\d+ \d+\.\d+ tool-built$", err, re.M)) == 1, err
    assert _status(err, "[linux/arm64 tools 2/2] RUN")[0] == "CACHED (this build)"
    assert (tmp_path / "out/linux_arm64/tool.txt").read_text() == "t\n"


def test_run_of_a_foreign_platform_goes_through_qemu(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str
) -> None:
    dockerfile = "ARG BASE\nFROM ${BASE}\nARG TARGETARCH\nRUN uname -m > /uname.txt && echo $TARGETARCH > /arch.txt\n"
    rc, _, err = _build(
        capsys, _context(tmp_path / "ctx", dockerfile), tmp_path / "state", "--build-arg", f"BASE={base}",
        "--platform", "arm64", "-o", f"type=local,dest={tmp_path / 'out'}",
    )  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "out/uname.txt").read_text() == "aarch64\n"  # a single platform: no per-platform dir
    assert (tmp_path / "out/arch.txt").read_text() == "arm64\n"


def _layers_by_platform(layout_tar: Path) -> dict[str, list[str]]:
    """platform -> its image's layer digests, from an OCI layout tar holding an index."""
    with tarfile.open(layout_tar) as tar:
        def blob(digest: str) -> dict[str, object]:
            return json.loads(tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read())  # type: ignore[union-attr]

        top = json.loads(tar.extractfile("index.json").read())["manifests"][0]  # type: ignore[union-attr]
        index = blob(top["digest"])
        return {
            f"{m['platform']['os']}/{m['platform']['architecture']}": [
                layer["digest"] for layer in blob(m["digest"])["layers"]  # type: ignore[index]
            ]
            for m in index["manifests"]  # type: ignore[union-attr]
        }


def test_one_cache_export_holds_every_platform(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str, lamina_registry: RegistryProcess
) -> None:
    cache = f"{lamina_registry.host}/platforms/cache:multi"
    flags = ["--build-arg", f"BASE={base}", "--platform", "linux/amd64,linux/arm64"]
    context = _context(tmp_path / "ctx", CROSS)
    rc, _, err = _build(capsys, context, tmp_path / "one", *flags, "--cache-to", f"type=registry,ref={cache}",
                        "-o", f"type=oci,dest={tmp_path / 'one.tar'}")
    assert rc == 0, err
    rc, _, err = _build(capsys, context, tmp_path / "two", *flags, "--cache-from", f"type=registry,ref={cache}",
                        "-o", f"type=oci,dest={tmp_path / 'two.tar'}")
    assert rc == 0, err
    # from a fresh state every platform's steps hit the one export: the same layers, nothing executed
    assert _layers_by_platform(tmp_path / "two.tar") == _layers_by_platform(tmp_path / "one.tar")
    for platform in ("linux/amd64", "linux/arm64"):
        for step in (f"[{platform} stage-1 2/3] COPY hello.txt", f"[{platform} stage-1 3/3] COPY --from=build"):
            assert _status(err, step) == [f"CACHED ({cache})"], (step, err)
    assert not re.search(r"^#\d+ (DONE|MISS)", err, re.M), err


def test_inline_cache_of_a_multi_platform_image_serves_every_platform(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str, lamina_registry: RegistryProcess
) -> None:
    ref = f"{lamina_registry.host}/platforms/inline:1"
    flags = ["--build-arg", f"BASE={base}", "--platform", "linux/amd64,linux/arm64"]
    context = _context(tmp_path / "ctx", CROSS)
    rc, _, err = _build(capsys, context, tmp_path / "one", *flags, "-t", ref, "--push", "--cache-to", "type=inline")
    assert rc == 0, err
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)
    for entry in index["manifests"]:  # each platform's image embeds its own chain's records
        config = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                                   f"docker://{lamina_registry.host}/platforms/inline@{entry['digest']}").stdout)
        assert "moby.buildkit.cache.v0" in config
    rc, _, err = _build(capsys, context, tmp_path / "two", *flags, "--cache-from", f"type=registry,ref={ref}")
    assert rc == 0, err
    for platform in ("linux/amd64", "linux/arm64"):
        for step in (f"[{platform} stage-1 2/3] COPY hello.txt", f"[{platform} stage-1 3/3] COPY --from=build"):
            assert _status(err, step) == [f"CACHED ({ref})"], (step, err)


def test_platform_missing_from_the_base_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str
) -> None:
    rc, _, err = _build(
        capsys, _context(tmp_path / "ctx", "ARG BASE\nFROM ${BASE}\nRUN true\n"), tmp_path / "state",
        "--build-arg", f"BASE={base}", "--platform", "linux/s390x",
    )  # fmt: skip
    assert rc == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: Dockerfile:2: FROM ")
    assert "no manifest for platform linux/s390x (index offers: linux/amd64, linux/arm64)" in line


def test_a_failing_step_names_its_platform(capsys: pytest.CaptureFixture[str], tmp_path: Path, base: str) -> None:
    dockerfile = "ARG BASE\nFROM ${BASE}\nARG TARGETARCH\nRUN test $TARGETARCH = amd64\n"
    rc, _, err = _build(
        capsys, _context(tmp_path / "ctx", dockerfile), tmp_path / "state", "--build-arg", f"BASE={base}",
        "--platform", "linux/amd64,linux/arm64",
    )  # fmt: skip
    assert rc == 1
    assert err.strip().splitlines()[-1].startswith(
        "error: Dockerfile:4 [linux/arm64]: RUN test $TARGETARCH = amd64: exit code 1"
    ), err


def test_single_platform_base_of_another_platform_warns_as_buildkit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lamina_registry: RegistryProcess, busybox_rootfs: Path
) -> None:
    amd64_only = busybox_image(lamina_registry, name="platforms/amd64-only", rootfs=busybox_rootfs).reference
    rc, _, err = _build(
        capsys, _context(tmp_path / "ctx", f"FROM {amd64_only}\nCOPY hello.txt /\n"), tmp_path / "state",
        "--platform", "linux/arm64", "-o", f"type=oci,dest={tmp_path / 'image.tar'}",
    )  # fmt: skip
    assert rc == 0, err
    assert (f'WARNING: InvalidBaseImagePlatform: Base image {amd64_only} was pulled with platform "linux/amd64", '
            'expected "linux/arm64" for current build') in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--platform", "linux/amd46"], "error: invalid platform 'linux/amd46': unknown architecture 'amd46'"),
        (["--platform", "linux/amd64,"], "error: invalid platform '': empty"),
        (["--platform", "linux/amd64,linux/arm64", "-o", "type=docker,dest=x.tar"],
         "error: --output type=docker holds one image"),
    ],
)
def test_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], message: str
) -> None:
    rc, _, err = _build(capsys, _context(tmp_path / "ctx", "FROM scratch\n"), tmp_path / "state", *flags)
    assert rc == 1
    assert err.strip().startswith(message), err
    assert len(err.strip().splitlines()) == 1

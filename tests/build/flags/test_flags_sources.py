"""Where a build's inputs come from: --build-context (a directory with its own .dockerignore, a registry image,
an OCI layout; a stage replaced), --pull against the local record of base resolutions, --no-cache-filter.
Real lamina registries on loopback, real runc for RUN."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers.buildcli import build as _build
from helpers.buildcli import make_context as _context
from helpers.images import PushedImage, busybox_image, image_manifest, layer_from_dir, skopeo, write_layout
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)




def _ran(err: str, marker: str) -> bool:
    """Whether a RUN printed ``marker`` (an output line ``#N 0.123 marker``)."""
    return re.search(rf"^#\d+ \d+\.\d+ {re.escape(marker)}$", err, re.M) is not None


def _cached(err: str, step: str) -> bool:
    """Whether the step shown as ``step`` was a cache hit (``#N [...] step`` then ``#N CACHED``)."""
    match = re.search(rf"^(#\d+) \[[^]]+\] {re.escape(step)}$", err, re.M)
    return match is not None and re.search(rf"^{match.group(1)} CACHED", err, re.M) is not None


def test_dir_context_with_its_own_dockerignore(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _context(tmp_path / "other", "", {"keep.txt": "kept\n", "secret.txt": "never\n",
                                              ".dockerignore": "secret.txt\nDockerfile\n"})
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / ".dockerignore").write_text("keep.txt\n")  # the main context's rules do not apply there
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY --from=other . /other/\n")
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, context, tmp_path / "state", "--build-context", f"other={other}",
                        "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert sorted(p.name for p in (out / "other").iterdir()) == [".dockerignore", "keep.txt"]
    (other / "keep.txt").write_text("changed\n")  # the key is the named context's content
    rc, _, err = _build(capsys, context, tmp_path / "state", "--build-context", f"other={other}",
                        "--output", f"type=local,dest={tmp_path / 'rootfs2'}")
    assert rc == 0, err
    assert (tmp_path / "rootfs2" / "other" / "keep.txt").read_text() == "changed\n"
    (other / "secret.txt").write_text("ignored change\n")
    rc, _, err = _build(capsys, context, tmp_path / "state", "--build-context", f"other={other}")
    assert rc == 0 and _cached(err, "COPY --from=other . /other/"), err  # an ignored file is not an input


def test_image_contexts_replace_a_stage_and_a_base(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = (
        "FROM example.invalid/never/resolved:1 AS tools\n"
        "RUN exit 1\n"
        "FROM alpine:3.19\n"
        "COPY --from=tools /bin/busybox /tools-busybox\n"
        "RUN test -x /bin/busybox && echo base-is-busybox\n"
    )
    context = _context(tmp_path / "ctx", dockerfile)
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}",
                        "--build-context", f"tools=docker-image://{busybox_base.reference}",
                        "--build-context", f"alpine:3.19=docker-image://{busybox_base.reference}")
    assert rc == 0, err
    assert _ran(err, "base-is-busybox") and "example.invalid" not in err
    assert (out / "tools-busybox").read_bytes() == (out / "bin" / "busybox").read_bytes()


def test_oci_layout_context_as_base_is_pushed_from_the_layout(
    busybox_rootfs: Path, lamina_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = image_manifest([layer_from_dir(busybox_rootfs)])
    layout = write_layout(tmp_path / "layout", image.manifest, [image.config, *image.layers], tag="v7")
    context = _context(tmp_path / "ctx", "FROM base\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    ref = f"{lamina_registry.host}/flags/from-layout:v1"
    rc, _, err = _build(capsys, context, tmp_path / "state", "-t", ref, "--push",
                        "--build-context", f"base=oci-layout://{layout}:v7")
    assert rc == 0, err
    pushed = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)
    assert pushed["layers"][0]["digest"] == image.layers[0].digest  # the layout's layer, uploaded from it
    rc, _, err = _build(capsys, context, tmp_path / "state2", "--build-context", f"base=oci-layout://{layout}:v9")
    assert rc == 1 and "no image tagged 'v9'" in err and "v7" in err


def test_from_a_dir_context_is_its_files_on_scratch(
    busybox_rootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``FROM NAME`` with a directory: a stage whose root filesystem is the directory (its .dockerignore
    applied), on which RUN then runs."""
    files = tmp_path / "files"
    shutil.copytree(busybox_rootfs, files, symlinks=True)
    (files / "skip.me").write_text("ignored\n")
    (files / ".dockerignore").write_text("skip.me\n")
    context = _context(tmp_path / "ctx", "FROM files AS root\nRUN echo ran-on-the-dir | tee /ran\n")
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, context, tmp_path / "state", "--build-context", f"files={files}",
                        "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert _ran(err, "ran-on-the-dir")
    assert (out / "ran").read_text() == "ran-on-the-dir\n" and (out / "bin" / "busybox").is_file()
    assert not (out / "skip.me").exists()


def test_pull_refuses_the_local_record_when_the_registry_is_down(
    make_lamina_registry: object, busybox_rootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry: RegistryProcess = make_lamina_registry()  # type: ignore[operator]
    base = busybox_image(registry, name="pull/busybox", rootfs=busybox_rootfs).reference
    context = _context(tmp_path / "ctx", f"FROM {base}\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    state = tmp_path / "state"
    rc, first, err = _build(capsys, context, state)
    assert rc == 0, err
    registry.stop()
    rc, again, err = _build(capsys, context, state)  # no --pull: the last resolution, said out loud
    assert rc == 0, err
    assert again == first
    assert "WARNING: " in err and f"using {base} as last resolved" in err and "--pull" in err
    rc, _, err = _build(capsys, context, state, "--pull")
    assert rc == 1 and "error: " in err and registry.host in err and "last resolved" not in err


def test_no_cache_filter_runs_the_named_stage_only(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = (
        f"FROM {busybox_base.reference} AS deps\n"
        "RUN echo deps-ran && echo deps > /deps\n"
        f"FROM {busybox_base.reference} AS build\n"
        "COPY --from=deps /deps /deps\n"
        "RUN echo build-ran && cat /deps > /built\n"
    )
    context = _context(tmp_path / "ctx", dockerfile)
    state = tmp_path / "state"
    rc, _, err = _build(capsys, context, state)
    assert rc == 0 and _ran(err, "deps-ran") and _ran(err, "build-ran"), err
    rc, _, err = _build(capsys, context, state, "--no-cache-filter", "build")
    assert rc == 0, err
    assert not _ran(err, "deps-ran") and _ran(err, "build-ran")
    assert "MISS --no-cache-filter" in err
    rc, _, err = _build(capsys, context, state, "--no-cache-filter", "Deps,nosuch")
    assert rc == 1 and "--no-cache-filter nosuch: no stage of that name (stages: build, deps)" in err


def test_run_mount_from_named_contexts(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _context(tmp_path / "other", "", {"keep.txt": "kept", "secret.txt": "never", ".dockerignore": "secret*\n"})
    dockerfile = (
        f"FROM {busybox_base.reference}\n"
        "RUN --mount=type=bind,from=other,target=/mnt echo mounted-$(cat /mnt/keep.txt) && test ! -e /mnt/secret.txt\n"
        "RUN --mount=type=bind,from=tools,source=/bin,target=/t test -x /t/busybox && echo tools-mounted\n"
    )
    context = _context(tmp_path / "ctx", dockerfile)
    rc, _, err = _build(capsys, context, tmp_path / "state", "--build-context", f"other={other}",
                        "--build-context", f"tools=docker-image://{busybox_base.reference}")
    assert rc == 0, err
    assert _ran(err, "mounted-kept") and _ran(err, "tools-mounted")


def test_add_host_ulimit_shm_size_reach_every_run_and_its_key(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = (
        f"FROM {busybox_base.reference}\n"
        "RUN cat /etc/hosts && echo nofile=$(ulimit -n):$(ulimit -Hn) && grep ' /dev/shm ' /proc/mounts\n"
    )
    context = _context(tmp_path / "ctx", dockerfile)
    state = tmp_path / "state"
    flags = ["--add-host", "db.internal:10.1.2.3", "--add-host", "v6=[::1],cache=10.0.0.9",
             "--ulimit", "nofile=1024:2048", "--shm-size", "128m"]
    rc, _, err = _build(capsys, context, state, *flags)
    assert rc == 0, err
    assert _ran(err, "10.1.2.3\tdb.internal") and _ran(err, "::1\tv6") and _ran(err, "10.0.0.9\tcache")
    assert _ran(err, "127.0.0.1\tlocalhost buildkitsandbox")  # the sandbox's own lines stay
    assert _ran(err, "nofile=1024:2048")
    assert re.search(r"^#\d+ \d+\.\d+ shm /dev/shm tmpfs \S*size=131072k", err, re.M), err
    rc, _, err = _build(capsys, context, state, *flags)
    assert rc == 0 and _cached(err, dockerfile.splitlines()[1]), err
    rc, _, err = _build(capsys, context, state, *flags[:-2])  # the same RUN with another /dev/shm: a miss
    assert rc == 0 and "MISS --add-host, --ulimit or --shm-size changed" in err, err
    assert re.search(r"^#\d+ \d+\.\d+ shm /dev/shm tmpfs \S*size=65536k", err, re.M), err
    rc, _, err = _build(capsys, context, state, "--network", "host", "--allow", "network.host",
                        "--add-host", "on-host:10.9.9.9")
    assert rc == 0 and _ran(err, "10.9.9.9\ton-host"), err  # after the host's own /etc/hosts
    host_lines = [line for line in Path("/etc/hosts").read_text().splitlines() if line.strip()]
    assert not host_lines or _ran(err, host_lines[0])

"""End to end: ``lamina build`` against a real lamina registry, real runc, real overlay mounts.

Each test builds from a busybox-static base image pushed by the fixture, and looks inside what comes
out: CACHED lines, the pushed manifest and config, the image run by runc after a skopeo pull, the
OCI tarball, the local root filesystem.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers.buildcli import build as _build
from helpers.buildcli import make_context as _context
from helpers.images import busybox_image, skopeo, two_platform_index
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="build/busybox", rootfs=busybox_rootfs).reference




def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [line.split()[1] for line in fh if line.split()[1].startswith(str(root))]


def _steps(err: str) -> dict[str, list[str]]:
    """vertex name -> its status lines, from plain progress output."""
    names: dict[str, str] = {}
    lines: dict[str, list[str]] = {}
    for line in err.splitlines():
        if not line.startswith("#"):
            continue
        vertex, _, rest = line.partition(" ")
        if rest.startswith("["):
            names[vertex] = rest
            lines[rest] = []
        elif vertex in names:
            lines[names[vertex]].append(rest)
    return lines


def _ran(err: str, marker: str) -> bool:
    """Whether a RUN printed ``marker`` (an output line ``#N 0.123 marker``, not the step's name)."""
    return re.search(rf"^#\d+ \d+\.\d+ {re.escape(marker)}$", err, re.M) is not None


APP = """\
FROM {base}
ENV GREETING=hello
WORKDIR /app
COPY a.txt /app/
RUN cat /app/a.txt > /app/out.txt && echo "ran-step-one"
COPY b.txt /app/
RUN echo "$GREETING $(cat /app/b.txt)" > /app/greeting.txt && echo "ran-step-two"
CMD ["cat", "/app/greeting.txt"]
"""


def test_rebuild_is_fully_cached_and_a_changed_file_reruns_from_its_copy(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    root = tmp_path / "state"
    rc, first_digest, err = _build(capsys, context, root)
    assert rc == 0, err
    assert _ran(err, "ran-step-one") and _ran(err, "ran-step-two")
    assert "CACHED" not in err

    rc, second_digest, err = _build(capsys, context, root)
    assert rc == 0, err
    steps = _steps(err)
    layered = [name for name in steps if "FROM" not in name]
    assert len(layered) == 5
    assert all(steps[name][0].startswith("CACHED") for name in layered), err
    assert not _ran(err, "ran-step-one") and not _ran(err, "ran-step-two")
    assert second_digest == first_digest  # the same layers and times: the same image

    (context / "b.txt").write_text("changed\n")
    rc, third_digest, err = _build(capsys, context, root)
    assert rc == 0, err
    status = {name.split("] ", 1)[1]: lines[0] for name, lines in _steps(err).items() if "FROM" not in name}
    assert status["WORKDIR /app"].startswith("CACHED")
    assert status["COPY a.txt /app/"].startswith("CACHED")
    assert not status["COPY b.txt /app/"].startswith("CACHED")
    assert _ran(err, "ran-step-two") and not _ran(err, "ran-step-one")
    assert third_digest != first_digest


def test_no_cache_runs_everything(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = _context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    root = tmp_path / "state"
    assert _build(capsys, context, root)[0] == 0
    rc, _, err = _build(capsys, context, root, "--no-cache")
    assert rc == 0, err
    assert "CACHED" not in err and _ran(err, "ran-step-one") and _ran(err, "ran-step-two")


def test_push_pull_with_skopeo_and_run_with_runc(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "world\n"})
    ref = f"{lamina_registry.host}/build/app:v1"
    rc, digest, err = _build(capsys, context, tmp_path / "state", "-t", ref, "--push", "--label", "org.test=yes")
    assert rc == 0, err
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["config"]["Labels"] == {"org.test": "yes"}
    assert config["config"]["WorkingDir"] == "/app"
    assert "GREETING=hello" in config["config"]["Env"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 6
    assert [h.get("empty_layer", False) for h in config["history"][1:]] == [True, False, False, False, False, False,
                                                                           True]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    container = f"lamina-test-{os.getpid()}"
    proc = subprocess.run(["runc", "run", "--bundle", str(bundle), container], capture_output=True, text=True,
                          timeout=60, check=False)
    subprocess.run(["runc", "delete", "--force", container], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello world\n"


def test_source_date_epoch_gives_the_same_digest_from_cold(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    context = _context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    rc1, first, err1 = _build(capsys, context, tmp_path / "state1")
    rc2, second, err2 = _build(capsys, context, tmp_path / "state2")
    assert rc1 == 0 and rc2 == 0, err1 + err2
    assert "CACHED" not in err2
    assert first == second


def test_from_a_two_platform_index_picks_linux_amd64(
    lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = two_platform_index(lamina_registry, name="build/multi", rootfs=busybox_rootfs)
    dockerfile = f"FROM {pushed.reference}\nRUN cp /platform.txt /seen.txt\n"
    context = _context(tmp_path / "ctx", dockerfile, {})
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "seen.txt").read_text() == "linux/amd64\n"
    assert _mounts_under(tmp_path) == []
    assert (out / "bin" / "busybox").is_file()


def test_oci_tarball_is_a_valid_layout(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = _context(tmp_path / "ctx", f"FROM {base}\nRUN echo built > /built.txt\n", {})
    dest = tmp_path / "image.tar"
    rc, digest, err = _build(capsys, context, tmp_path / "state", "-t", "example.com/x:v2",
                             "--output", f"type=oci,dest={dest}")
    assert rc == 0, err
    with tarfile.open(dest) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert index["manifests"][0]["digest"] == digest
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v2"
    for name, data in members.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(members[f"blobs/sha256/{digest.split(':')[1]}"])
    last = members[f"blobs/sha256/{manifest['layers'][-1]['digest'].split(':')[1]}"]
    with tarfile.open(fileobj=io.BytesIO(last)) as layer:
        assert layer.extractfile("built.txt").read() == b"built\n"  # type: ignore[union-attr]


def test_multi_stage_copy_from(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = f"""\
FROM {base} AS one
RUN echo one > /one.txt
FROM {base} AS two
RUN echo two > /two.txt
FROM scratch
COPY --from=one /one.txt /
COPY --from=two /two.txt /
"""
    context = _context(tmp_path / "ctx", dockerfile, {})
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["one.txt", "two.txt"]
    assert (out / "two.txt").read_text() == "two\n"


def test_failing_run_names_the_line_and_exit_code(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {base}\nRUN echo about-to-fail && exit 3\n", {})
    rc, _, err = _build(capsys, context, tmp_path / "state")
    assert rc == 1
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "Dockerfile:2" in error[0] and "exit code 3" in error[0]
    assert "Dockerfile:2: RUN echo about-to-fail && exit 3: " in error[0]  # as written, as BuildKit shows it
    assert "# buildkit" not in error[0] and "/bin/sh -c" not in error[0]
    assert _ran(err, "about-to-fail")
    assert _mounts_under(tmp_path) == []  # the failed step's overlay is unmounted
    assert list((tmp_path / "state" / "snapshots").glob("[0-9a-f]*")) == []


def test_copy_of_a_missing_file_is_a_clear_error(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {base}\nCOPY nothere.txt /\n", {})
    rc, _, err = _build(capsys, context, tmp_path / "state")
    assert rc == 1
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Dockerfile:2" in error[0] and "nothere.txt" in error[0]


def test_miss_reason_names_the_changed_build_arg(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {base}\nARG V=1\nRUN echo $V > /v.txt\nRUN echo second\n", {})
    root = tmp_path / "state"
    assert _build(capsys, context, root)[0] == 0
    rc, _, err = _build(capsys, context, root, "--build-arg", "V=2")
    assert rc == 0, err
    status = {name.split("] ", 1)[1]: lines for name, lines in _steps(err).items() if "FROM" not in name}
    run_v = next(lines for name, lines in status.items() if "echo $V" in name)
    assert run_v[0] == "MISS env/arg V changed"
    second = next(lines for name, lines in status.items() if "echo second" in name)
    assert second[0] == "MISS parent step missed"


def test_cached_rebuild_is_lazy(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fully cached build unpacks nothing: the result is descriptors only."""
    context = _context(tmp_path / "ctx", f"FROM {base}\nRUN echo one > /one\nRUN echo two > /two\n", {})
    root = tmp_path / "state"
    rc, first, err = _build(capsys, context, root)
    assert rc == 0, err
    shutil.rmtree(root / "layers")
    rc, second, err = _build(capsys, context, root)
    assert rc == 0, err
    assert second == first
    assert [p for p in (root / "layers").iterdir() if not p.name.startswith(".")] == []


def test_push_to_a_second_repository_mounts_every_layer(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path
) -> None:
    """Layers the registry holds in another repository are cross-repo mounted, never uploaded again."""
    import asyncio

    from lamina.build.builder import BuildRequest, build
    from lamina.build.progress import PlainProgress

    context = _context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    request = BuildRequest(context_dir=context, dockerfile=(context / "Dockerfile").read_text(),
                           root=tmp_path / "state", push=True, tags=(f"{lamina_registry.host}/mount/one:v1",))
    first = asyncio.run(build(request, PlainProgress(io.StringIO())))
    assert first.transfer.uploaded["layer"] > 0
    second_request = BuildRequest(**{**request.__dict__, "tags": (f"{lamina_registry.host}/mount/two:v1",)})
    second = asyncio.run(build(second_request, PlainProgress(io.StringIO())))
    assert second.digest == first.digest
    assert second.cached_steps == len(second.steps)
    assert second.transfer.uploaded["layer"] == 0
    assert second.transfer.downloaded["layer"] == 0
    skopeo("inspect", "--tls-verify=false", f"docker://{lamina_registry.host}/mount/two:v1")


def test_cli_reads_the_dockerfile_from_stdin_and_network_none(base: str, tmp_path: Path) -> None:
    """The real command line in a subprocess: ``-f -``, ``--network none`` (only loopback inside)."""
    context = tmp_path / "ctx"
    context.mkdir()
    dockerfile = f"FROM {base}\nRUN cat /proc/net/dev > /net.txt\n"
    out = tmp_path / "rootfs"
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "build", "-f", "-", "--network", "none", "--progress", "plain",
         "--root", str(tmp_path / "state"), "--output", f"type=local,dest={out}", str(context)],
        input=dockerfile, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sha256:")
    interfaces = [line.split(":")[0].strip() for line in (out / "net.txt").read_text().splitlines()[2:]]
    assert interfaces == ["lo"]


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nFROBNICATE now\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(tmp_path / "state"),
         str(context)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Dockerfile:2" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_builds_at_once_share_one_state_dir(base: str, tmp_path: Path) -> None:
    context = _context(tmp_path / "ctx", APP.format(base=base), {"a.txt": "A\n", "b.txt": "B\n"})
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    argv = [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(tmp_path / "state"),
            str(context)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert results[0][0] == results[1][0]
    rc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert rc.returncode == 0 and rc.stdout == results[0][0]
    assert "CACHED" in rc.stderr and not _ran(rc.stderr, "ran-step-one")


def test_independent_stages_run_concurrently(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stage ``server`` waits for a connection that only stage ``client`` makes: built one after the
    other, the listener would time out; built concurrently, both finish. (Over the host's loopback: each
    sandboxed RUN has its own, so both use ``--network=host``, granted by ``--allow network.host``.)"""
    from helpers.registries import free_port

    port = free_port()
    dockerfile = f"""\
FROM {base} AS server
RUN --network=host busybox timeout 30 busybox nc -l -p {port} > /received.txt
FROM {base} AS client
RUN --network=host i=0; until echo hello-from-client | busybox nc 127.0.0.1 {port}; do i=$((i+1)); \\
    [ $i -gt 250 ] && exit 1; sleep 0.1; done; echo sent > /sent.txt
FROM scratch
COPY --from=server /received.txt /
COPY --from=client /sent.txt /
"""
    context = _context(tmp_path / "ctx", dockerfile, {})
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}",
                        "--allow", "network.host")
    assert rc == 0, err
    assert (out / "received.txt").read_text() == "hello-from-client\n"


@pytest.mark.parametrize(("compression", "media_type"), [
    ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("uncompressed", "application/vnd.oci.image.layer.v1.tar"),
])
def test_layer_compression(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], compression: str, media_type: str
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {base}\nRUN echo z > /z.txt\n", {})
    dest = tmp_path / "image.tar"
    rc, digest, err = _build(capsys, context, tmp_path / "state", "--compression", compression,
                             "--output", f"type=oci,dest={dest}")
    assert rc == 0, err
    with tarfile.open(dest) as tar:
        manifest = json.loads(tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read())  # type: ignore[union-attr]
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"  # the base's
    assert manifest["layers"][-1]["mediaType"] == media_type


def test_from_by_digest_and_from_a_docker_schema2_image(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker_ref = f"{lamina_registry.host}/build/docker-typed:v2s2"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
           f"docker://{base}", f"docker://{docker_ref}")
    digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{base}").stdout)["Digest"]
    pinned = f"{base.rsplit(':', 1)[0]}@{digest}"
    for i, ref in enumerate((pinned, docker_ref)):
        context = _context(tmp_path / f"ctx{i}", f"FROM {ref}\nRUN echo ok > /ok.txt\n", {})
        dest = tmp_path / f"image{i}.tar"
        rc, out, err = _build(capsys, context, tmp_path / "state", "--output", f"type=oci,dest={dest}")
        assert rc == 0, err
        with tarfile.open(dest) as tar:
            manifest = json.loads(tar.extractfile(f"blobs/sha256/{out.split(':')[1]}").read())  # type: ignore[union-attr]
        # Docker's gzip layer type is listed as the OCI one: the same bytes, an OCI manifest
        oci_gzip = "application/vnd.oci.image.layer.v1.tar+gzip"
        assert [layer["mediaType"] for layer in manifest["layers"]] == [oci_gzip] * 2


def test_onbuild_triggers_run_in_the_child_build(
    base: str, lamina_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent_ref = f"{lamina_registry.host}/build/onbuild:v1"
    parent = _context(tmp_path / "parent", f"FROM {base}\nONBUILD RUN echo triggered > /trigger.txt\n", {})
    rc, _, err = _build(capsys, parent, tmp_path / "state", "-t", parent_ref, "--push")
    assert rc == 0, err
    child = _context(tmp_path / "child", f"FROM {parent_ref}\nRUN cat /trigger.txt > /seen.txt\n", {})
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, child, tmp_path / "state", "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "seen.txt").read_text() == "triggered\n"

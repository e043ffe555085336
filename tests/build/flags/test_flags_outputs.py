"""--iidfile, --metadata-file, --annotation and --output type=docker / --load, end to end: built against a
real lamina registry on loopback, the pushed manifest read back with skopeo, the docker archive loaded
by podman."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.binaries import require_binary
from helpers.buildcli import build as _build
from helpers.buildcli import make_context as _context
from helpers.images import PushedImage, skopeo
from helpers.registries import RegistryProcess
from lamina.cli import main

pytestmark = [pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("needs root (overlay mounts for COPY)", allow_module_level=True)




def _raw(ref: str) -> dict[str, object]:
    return json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    """podman with its own storage under tmp (vfs), as a command prefix."""
    binary = require_binary("podman", "podman")
    runroot = Path(tempfile.mkdtemp(prefix="lamina-podman-"))  # podman wants a short runroot path
    try:
        yield [binary, "--root", str(tmp_path / "storage"), "--runroot", str(runroot), "--storage-driver", "vfs"]
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_iidfile_metadata_and_annotations_of_a_push(
    busybox_base: PushedImage, lamina_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY hello.txt /hello.txt\n",
                       {"hello.txt": "hello\n"})
    ref = f"{lamina_registry.host}/flags/meta:v1"
    iid, meta, oci = tmp_path / "iid", tmp_path / "meta.json", tmp_path / "image.tar"
    iid.write_text("stale")
    rc, digest, err = _build(
        capsys, context, tmp_path / "state", "-t", ref, "--push", "--iidfile", str(iid), "--metadata-file", str(meta),
        "--annotation", "org.opencontainers.image.title=meta", "--annotation", "manifest:org.example.level=manifest",
        "--annotation", "manifest-descriptor:org.example.level=descriptor",
        "--annotation", "manifest[linux/arm64]:org.example.arm=only-arm", "--output", f"type=oci,dest={oci}",
    )
    assert rc == 0, err
    pushed = _raw(ref)
    assert pushed["annotations"] == {"org.opencontainers.image.title": "meta", "org.example.level": "manifest"}
    config_digest = pushed["config"]["digest"]  # type: ignore[index]
    assert iid.read_text() == config_digest  # buildx: the config digest, no newline
    doc = json.loads(meta.read_text())
    assert doc["containerimage.digest"] == digest
    assert doc["containerimage.config.digest"] == config_digest
    assert doc["image.name"] == ref
    descriptor = doc["containerimage.descriptor"]
    assert descriptor["digest"] == digest and descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert descriptor["annotations"]["org.example.level"] == "descriptor"
    assert "org.opencontainers.image.created" in descriptor["annotations"]
    with tarfile.open(oci) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    entry = index["manifests"][0]
    assert entry["digest"] == digest and entry["annotations"]["org.example.level"] == "descriptor"


def test_failed_build_leaves_no_stale_iidfile(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY missing.txt /\n", {})
    iid = tmp_path / "iid"
    iid.write_text("sha256:old")
    rc, _, err = _build(capsys, context, tmp_path / "state", "--iidfile", str(iid))
    assert rc == 1 and "missing.txt" in err
    assert not iid.exists()


def test_docker_archive_is_loaded_by_podman(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str], podman: list[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY hello.txt /hello.txt\n"
                       'CMD ["cat", "/hello.txt"]\n', {"hello.txt": "hello from a docker archive\n"})
    archive, iid = tmp_path / "image.tar", tmp_path / "iid"
    rc, digest, err = _build(capsys, context, tmp_path / "state", "-t", "flags/archive:v1", "-t", "127.0.0.1:1/x:v2",
                             "--output", f"type=docker,dest={archive}", "--iidfile", str(iid))
    assert rc == 0, err
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["flags/archive:v1", "127.0.0.1:1/x:v2"]
    assert manifest[0]["Config"] == "blobs/sha256/" + iid.read_text().removeprefix("sha256:")
    assert all(layer in names for layer in manifest[0]["Layers"]) and len(manifest[0]["Layers"]) == 2
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [
        "docker.io/flags/archive:v1", "127.0.0.1:1/x:v2"]
    assert {m["digest"] for m in index["manifests"]} == {digest}
    load = subprocess.run([*podman, "load", "-i", str(archive)], capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stderr
    inspect = subprocess.run([*podman, "image", "inspect", "flags/archive:v1"], capture_output=True, text=True,
                             timeout=60, check=True)
    assert json.loads(inspect.stdout)[0]["Id"] == iid.read_text().removeprefix("sha256:")
    mounted = subprocess.run([*podman, "image", "mount", "flags/archive:v1"], capture_output=True, text=True,
                             timeout=60)  # the loaded image's root filesystem, as podman stores it
    assert mounted.returncode == 0, mounted.stderr
    try:
        rootfs = Path(mounted.stdout.strip())
        assert (rootfs / "hello.txt").read_text() == "hello from a docker archive\n"
        assert (rootfs / "bin" / "busybox").is_file()
    finally:
        subprocess.run([*podman, "image", "unmount", "flags/archive:v1"], capture_output=True, timeout=60)


def test_load_goes_through_the_docker_cli_in_path(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str], podman: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY hello.txt /\n", {"hello.txt": "x\n"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"  # podman-docker's `docker` is podman under that name; this one keeps tmp storage
    docker.write_text("#!/bin/sh\nexec " + " ".join(podman) + ' "$@"\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    rc, _, err = _build(capsys, context, tmp_path / "state", "-t", "flags/loaded:v1", "--load")
    assert rc == 0, err
    listed = subprocess.run([*podman, "image", "exists", "flags/loaded:v1"], capture_output=True, timeout=60)
    assert listed.returncode == 0
    assert list((tmp_path / "state" / "tmp").glob("load-*")) == []  # the archive piped to `docker load` is gone
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no docker CLI at all: one line saying what to do
    rc, _, err = _build(capsys, context, tmp_path / "state", "--load")
    assert rc == 1
    assert "error: --load / --output type=docker: no `docker` command in PATH" in err


def _lamina(*argv: str, stdout: Path) -> subprocess.CompletedProcess[bytes]:
    """``lamina build`` as a process, its stdout into a file (what `-o -` writes must be all that is there)."""
    with open(stdout, "wb") as out:
        return subprocess.run([sys.executable, "-m", "lamina.cli", "build", *argv], stdout=out,
                              stderr=subprocess.PIPE, timeout=300, check=False)


def test_tar_outputs_to_a_file_and_to_stdout(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY hello.txt /etc/hello.txt\n",
                       {"hello.txt": "hello\n"})
    state = tmp_path / "state"
    rc, _, err = _build(capsys, context, state, "--output", f"type=tar,dest={tmp_path / 'root.tar'}")
    assert rc == 0, err
    with tarfile.open(tmp_path / "root.tar") as tar:
        names = tar.getnames()
        assert tar.extractfile("etc/hello.txt").read() == b"hello\n"  # type: ignore[union-attr]
    assert "bin/busybox" in names and not any(name.startswith("./") for name in names)
    proc = _lamina("--root", str(state), "-o", "-", str(context), stdout=tmp_path / "stdout.tar")
    assert proc.returncode == 0, proc.stderr.decode()
    with tarfile.open(tmp_path / "stdout.tar") as tar:  # only the tarball: no digest line after it
        assert tar.getnames() == names
    proc = _lamina("--root", str(state), "-t", "flags/stream:v1", "--output", "type=docker,dest=-", str(context),
                   stdout=tmp_path / "docker.tar")
    assert proc.returncode == 0, proc.stderr.decode()
    with tarfile.open(tmp_path / "docker.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["flags/stream:v1"]
    assert list((state / "tmp").iterdir()) == []


@pytest.mark.parametrize(("outputs", "message"), [
    (["type=registry,compression=zstd"], "type=registry takes no compression in lamina"),
    (["type=oci,dest=x.tar,tar=maybe"], "tar=maybe is not a boolean"),
    (["type=oci,dest=-,tar=false"], "tar=false writes a directory; stdout takes the tarball"),
    (["type=docker,dest=x.tar,tar=false"], "type=docker takes no tar in lamina"),
    (["type=local,dest=-"], "type=local writes a directory; use type=tar,dest=- for stdout"),
    (["-", "type=oci,dest=-"], "only one output can go to stdout (dest=-), got tar, oci"),
    (["type=tar"], "type=tar needs dest=PATH"),
])
def test_output_attributes_lamina_does_not_take_are_refused(
    outputs: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", "FROM scratch\n", {})
    args = [arg for output in outputs for arg in ("--output", output)]
    rc, _, err = _build(capsys, context, tmp_path / "state", *args)
    assert rc == 1 and message in err and err.count("\n") == 1, err


def test_annotations_of_a_multi_platform_push(
    two_platform_base: object, lamina_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Index annotations land in the index, a [platform] manifest annotation in that platform's manifest only,
    descriptor annotations on the index's entries; no RUN, so no emulation is needed."""
    context = _context(tmp_path / "ctx", f"FROM {two_platform_base.reference}\nCOPY a.txt /a.txt\n",  # type: ignore[attr-defined]
                       {"a.txt": "a\n"})
    ref = f"{lamina_registry.host}/flags/multi:v1"
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    rc, digest, err = _build(
        capsys, context, tmp_path / "state", "--platform", "linux/amd64,linux/arm64", "-t", ref, "--push",
        "--iidfile", str(iid), "--metadata-file", str(meta),
        "--annotation", "index:org.example.index=i", "--annotation", "index-descriptor:org.example.top=t",
        "--annotation", "manifest[linux/arm64]:org.example.arm=a", "--annotation", "manifest:org.example.all=m",
        "--annotation", "manifest-descriptor:org.example.entry=e",
    )
    assert rc == 0, err
    index = _raw(ref)
    assert index["annotations"] == {"org.example.index": "i"}
    assert iid.read_text() == digest == json.loads(meta.read_text())["containerimage.digest"]  # the index's
    metadata = json.loads(meta.read_text())
    assert "containerimage.config.digest" not in metadata and "platform" not in metadata["containerimage.descriptor"]
    assert metadata["containerimage.descriptor"]["annotations"]["org.example.top"] == "t"
    assert metadata["containerimage.descriptor"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    for entry in index["manifests"]:  # type: ignore[union-attr]
        assert entry["annotations"] == {"org.example.entry": "e"}
        manifest = _raw(f"{lamina_registry.host}/flags/multi@{entry['digest']}")
        expected = {"org.example.all": "m"}
        if entry["platform"]["architecture"] == "arm64":
            expected["org.example.arm"] = "a"
        assert manifest["annotations"] == expected


def test_quiet_prints_only_the_digest(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY a.txt /\n", {"a.txt": "a\n"})
    rc = main(["build", "-q", "--root", str(tmp_path / "state"), str(context)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "" and out.startswith("sha256:") and out.count("\n") == 1
    (context / "Dockerfile").write_text(f"FROM {busybox_base.reference}\nCOPY missing.txt /\n")
    rc = main(["build", "--progress", "quiet", "--root", str(tmp_path / "state"), str(context)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and err.startswith("error: Dockerfile:2: COPY missing.txt /") and err.count("\n") == 1


def test_oci_layout_directory_round_trip(
    busybox_base: PushedImage, tmp_path: Path, capsys: pytest.CaptureFixture[str], skopeo_bin: str
) -> None:
    """tar=false writes a layout directory skopeo reads, and a later build takes it as oci-layout:// context."""
    context = _context(tmp_path / "ctx", f"FROM {busybox_base.reference}\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    layout = tmp_path / "layout"
    rc, digest, err = _build(capsys, context, tmp_path / "state", "-t", "flags/dir:v3",
                             "--output", f"type=oci,dest={layout},tar=false")
    assert rc == 0, err
    index = json.loads((layout / "index.json").read_text())
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]] == [
        (digest, "v3")]
    inspected = json.loads(skopeo("inspect", f"oci:{layout}:v3").stdout)
    assert inspected["Digest"] == digest and len(inspected["Layers"]) == 2
    second = _context(tmp_path / "ctx2", "FROM built\nCOPY b.txt /b.txt\n", {"b.txt": "b\n"})
    out = tmp_path / "rootfs"
    rc, _, err = _build(capsys, second, tmp_path / "state2", "--build-context", f"built=oci-layout://{layout}:v3",
                        "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "a.txt").read_text() == "a\n" and (out / "b.txt").read_text() == "b\n"

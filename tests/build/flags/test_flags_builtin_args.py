"""BuildKit's built-in build args and the legacy/refused flags: each one does what BuildKit/buildx does with it
or stops the build in one line (exit 2); none is accepted and dropped."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.build.builtinargs import BuildArgRefused, builtin_args
from lamina.build.dockerfile import DockerfileError, convert
from lamina.build.mounts import CacheMount
from lamina.build.ops import RunStep
from lamina.cli import main
from lamina.oci import ContainerConfig, ImageConfig, Platform

_RUNC = os.geteuid() == 0 and shutil.which("runc") is not None


def _convert(text: str, **build_args: str):  # type: ignore[no-untyped-def]
    def resolve(ref: str, platform: Platform) -> ImageConfig:
        return ImageConfig(config=ContainerConfig({"Env": ["PATH=/bin"]}))

    return convert(text, resolve_base=resolve, build_args=build_args, platform="linux/amd64",
                   build_platform="linux/amd64")


def test_source_date_epoch_comes_from_the_environment_as_buildx_passes_it() -> None:
    args, builtin = builtin_args({}, {"SOURCE_DATE_EPOCH": "1700000000"})
    assert args == {"SOURCE_DATE_EPOCH": "1700000000"} and builtin.source_date_epoch == 1700000000
    args, builtin = builtin_args({"SOURCE_DATE_EPOCH": "5"}, {"SOURCE_DATE_EPOCH": "1700000000"})
    assert args["SOURCE_DATE_EPOCH"] == "5" and builtin.source_date_epoch == 5  # the build arg wins
    assert builtin_args({}, {})[1].source_date_epoch is None
    with pytest.raises(ValueError, match="invalid SOURCE_DATE_EPOCH 'soon'"):
        builtin_args({"SOURCE_DATE_EPOCH": "soon"}, {})


def test_inline_cache_and_booleans() -> None:
    assert builtin_args({"BUILDKIT_INLINE_CACHE": "1"}, {})[1].inline_cache
    assert not builtin_args({"BUILDKIT_INLINE_CACHE": "false"}, {})[1].inline_cache
    assert builtin_args({"BUILDKIT_MULTI_PLATFORM": "0", "BUILDKIT_CONTEXT_KEEP_GIT_DIR": "false"}, {})
    with pytest.raises(BuildArgRefused, match="BUILDKIT_INLINE_CACHE=yes: expected a boolean"):
        builtin_args({"BUILDKIT_INLINE_CACHE": "yes"}, {})


@pytest.mark.parametrize(("arg", "message"), [
    ("BUILDKIT_BUILD_NAME=nightly", "--build-arg BUILDKIT_BUILD_NAME is not supported by lamina"),
    ("BUILDKIT_MULTI_PLATFORM=1", "--build-arg BUILDKIT_MULTI_PLATFORM=1 is not supported by lamina"),
    ("BUILDKIT_CONTEXT_KEEP_GIT_DIR=true", "--build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=true is not supported"),
])
def test_unsupported_builtin_args_are_refused_in_one_line(
    arg: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    rc = main(["build", "--root", str(tmp_path / "state"), "--build-arg", arg, str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "state").exists()  # refused before any work


def test_a_bad_sandbox_hostname_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    rc = main(["build", "--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=bad/name", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "invalid --build-arg BUILDKIT_SANDBOX_HOSTNAME='bad/name'" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["--compress"], ["--isolation", "default"], ["--memory", "1g"], ["--memory-swap", "-1"],
    ["--cpu-shares", "512"], ["--cpu-period", "100000"], ["--cpu-quota", "50000"], ["--cpuset-cpus", "0"],
    ["--cpuset-mems", "0"], ["--disable-content-trust"], ["--squash"], ["--builder", "x"], ["--call", "outline"],
])
def test_legacy_and_daemon_flags_are_refused(argv: list[str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["build", *argv, str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {argv[0]} is not supported by lamina: ") and err.count("\n") == 1


def test_rm_force_rm_and_call_build_ask_for_what_lamina_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["build", "--rm", "--force-rm", "--call", "build", str(tmp_path)])  # accepted: no Dockerfile here
    assert rc == 1 and "Dockerfile not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # --rm=false asks to keep containers: the parser refuses it
        main(["build", "--rm=false", str(tmp_path)])
    assert info.value.code == 2


def test_cache_mount_namespace() -> None:
    text = "FROM base\nRUN --mount=type=cache,target=/root/.cache --mount=type=cache,id=go,target=/go true\n"
    plain = [m for m in _step(_convert(text)).mounts if isinstance(m, CacheMount)]
    assert [m.id for m in plain] == ["/root/.cache", "go"]
    spaced = [m for m in _step(_convert(text, BUILDKIT_CACHE_MOUNT_NS="proj")).mounts if isinstance(m, CacheMount)]
    assert [m.id for m in spaced] == ["proj//root/.cache", "proj/go"]  # BuildKit: namespace + "/" + id


def _step(graph) -> RunStep:  # type: ignore[no-untyped-def]
    steps = [s for s in graph.stage(graph.target).steps if isinstance(s, RunStep)]
    assert len(steps) == 1
    return steps[0]


def test_dockerfile_check_build_arg_replaces_the_directive() -> None:
    with pytest.raises(DockerfileError, match="--build-arg BUILDKIT_DOCKERFILE_CHECK=error=true: lamina runs none"):
        _convert("FROM base\n", BUILDKIT_DOCKERFILE_CHECK="error=true")
    _convert("# check=error=true\nFROM base\n", BUILDKIT_DOCKERFILE_CHECK="skip=all")  # the arg wins
    with pytest.raises(DockerfileError, match="# check=error=true"):
        _convert("# check=error=true\nFROM base\n")


def test_syntax_build_arg_dockerfile_v0_is_the_builtin_frontend() -> None:
    graph = _convert("# syntax=example.com/other/frontend:1\nFROM base\n", BUILDKIT_SYNTAX="dockerfile.v0")
    assert not any("frontend" in w for w in graph.warnings)
    with pytest.raises(DockerfileError, match="lamina cannot run other frontend images"):
        _convert("# syntax=example.com/other/frontend:1\nFROM base\n")


def test_other_buildkit_names_are_ordinary_build_args() -> None:
    graph = _convert("FROM base\n", BUILDKIT_NOT_A_SETTING="1", BUILDKIT_INLINE_CACHE="1")
    assert "one or more build-args [BUILDKIT_NOT_A_SETTING] were not consumed" in graph.warnings
    graph = _convert("FROM base\nARG BUILDKIT_NOT_A_SETTING\nRUN true\n", BUILDKIT_NOT_A_SETTING="1")
    assert "BUILDKIT_NOT_A_SETTING=1" in _step(graph).env


def test_flags_on_instructions_that_define_none() -> None:
    with pytest.raises(DockerfileError, match="ARG: unknown flag: --x"):
        _convert("ARG --x=1 V\nFROM base\n")
    with pytest.raises(DockerfileError, match="HEALTHCHECK NONE takes no flags \\(--interval=5s\\)"):
        _convert("FROM base\nHEALTHCHECK --interval=5s NONE\n")


def _oci_config(path: Path) -> dict:  # type: ignore[type-arg]
    with tarfile.open(path) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    return json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])  # type: ignore[no-any-return]


def test_source_date_epoch_and_inline_cache_build_args_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (tmp_path / "ctx" / "f").write_text("data\n")
    configs = []
    for extra in (["--build-arg", "SOURCE_DATE_EPOCH=1000", "--build-arg", "BUILDKIT_INLINE_CACHE=1"],
                  ["--cache-to", "type=inline"]):
        dest = tmp_path / f"image{len(configs)}.tar"
        rc = main(["build", "--progress", "plain", "--root", str(tmp_path / f"state{len(configs)}"), *extra,
                   "--output", f"type=oci,dest={dest}", str(tmp_path / "ctx")])
        assert rc == 0, capsys.readouterr().err
        configs.append(_oci_config(dest))
    assert configs[0]["created"] == "1970-01-01T00:16:40Z"
    assert {h["created"] for h in configs[0]["history"]} == {"1970-01-01T00:16:40Z"}
    assert configs[1]["created"] != "1970-01-01T00:16:40Z"
    assert "moby.buildkit.cache.v0" in configs[0] and "moby.buildkit.cache.v0" in configs[1]


@pytest.mark.root
@pytest.mark.skipif(not _RUNC, reason="needs root and runc")
def test_env_epoch_reaches_arg_and_cache_namespaces_keep_caches_apart(
    lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = busybox_image(lamina_registry, name="builtin/busybox", rootfs=busybox_rootfs).reference
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(
        f"FROM {base}\nARG SOURCE_DATE_EPOCH\n"
        "RUN --mount=type=cache,target=/c sh -c 'echo $SOURCE_DATE_EPOCH > /epoch; ls /c > /seen; touch /c/mark'\n"
    )
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    seen = []
    for namespace in ("a", "b", "a"):
        out = tmp_path / f"out{len(seen)}"
        rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), "--no-cache",
                   "--build-arg", f"BUILDKIT_CACHE_MOUNT_NS={namespace}", "--output", f"type=local,dest={out}",
                   str(tmp_path / "ctx")])
        assert rc == 0, capsys.readouterr().err
        assert (out / "epoch").read_text() == "1234\n"  # the environment's value, as buildx passes it
        seen.append((out / "seen").read_text())
    assert seen == ["", "", "mark\n"]  # namespace b has its own cache; a finds what a left


def test_platform_local_and_cacheonly_output_as_buildx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lamina.build.cli import _platforms
    from lamina.oci import host_platform

    assert _platforms(["local"]) == (host_platform(),)
    assert _platforms(["local,linux/arm64"])[1] == Platform("arm64", "linux")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (tmp_path / "ctx" / "f").write_text("data\n")
    rc = main(["build", "--root", str(tmp_path / "state"), "--output", "type=cacheonly", "--platform", "local",
               str(tmp_path / "ctx")])
    out, err = capsys.readouterr()
    assert rc == 0 and out.startswith("sha256:"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx", "state"]  # nothing exported


def test_add_url_credential_secrets_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    rc = main(["build", "--secret", "id=HTTP_AUTH_TOKEN_example.com,env=HOME", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "lamina's ADD sends no credentials to a URL" in err and err.count("\n") == 1


@pytest.mark.root
@pytest.mark.skipif(not _RUNC, reason="needs root and runc")
def test_sandbox_hostname_names_the_container_and_keys_the_run(
    lamina_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    base = busybox_image(lamina_registry, name="builtin/busybox", rootfs=busybox_rootfs).reference
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {base}\nRUN hostname > /h && head -1 /etc/hosts > /hosts\n")
    outs = []
    for extra in (["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=lamina-box"], []):
        out = tmp_path / f"out{len(outs)}"
        rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), *extra,
                   "--output", f"type=local,dest={out}", str(tmp_path / "ctx")])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert "CACHED" not in err  # the hostname is part of the RUN's key: neither build hits the other
        outs.append(((out / "h").read_text(), (out / "hosts").read_text()))
    assert outs == [("lamina-box\n", "127.0.0.1\tlocalhost lamina-box\n"),
                    ("buildkitsandbox\n", "127.0.0.1\tlocalhost buildkitsandbox\n")]


def test_build_policies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    rc = main(["build", "--policy", "log-level=debug", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --policy is not supported by lamina: ") and err.count("\n") == 1
    (tmp_path / "Dockerfile.rego").write_text("package docker\n")
    rc = main(["build", "--root", str(tmp_path / "state"), str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Dockerfile.rego: lamina evaluates no build policies" in err and err.count("\n") == 1


def test_a_tag_without_an_output_is_said_to_go_nowhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (tmp_path / "ctx" / "f").write_text("data\n")
    for extra, warned in ((["-t", "example.com/app:1"], True), (["-t", "example.com/app:1", "-o", "type=cacheonly"],
                                                               True), ([], False)):
        rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), *extra, str(tmp_path / "ctx")])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert ("WARNING: no output for -t example.com/app:1: lamina has no image store" in err) is warned


def test_buildkit_progress_environment_sets_the_default_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (tmp_path / "ctx" / "f").write_text("data\n")
    argv = ["build", "--root", str(tmp_path / "state"), str(tmp_path / "ctx")]
    monkeypatch.setenv("BUILDKIT_PROGRESS", "quiet")
    assert main(argv) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv[:1], "--progress", "plain", *argv[1:]]) == 0  # the flag wins
    assert "COPY f /f" in capsys.readouterr().err
    monkeypatch.setenv("BUILDKIT_PROGRESS", "rawjson")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: BUILDKIT_PROGRESS=rawjson: expected one of auto, plain, tty, quiet") and \
        err.count("\n") == 1

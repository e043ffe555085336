"""``# syntax=`` and ``BUILDKIT_SYNTAX``: the Dockerfile frontend images lamina builds in are noted once,
any other frontend image is a one-line error naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dfsupport import Resolver, run

from lamina.build.dockerfile import DockerfileError
from lamina.build.dockerfile.syntax import check_syntax

BUILTIN = [
    "docker/dockerfile:1",
    "docker/dockerfile:1.7",
    "docker/dockerfile:1.4.3",
    "docker/dockerfile:1-labs",
    "docker/dockerfile:1.7-labs",
    "docker/dockerfile:labs",
    "docker/dockerfile",
    "docker.io/docker/dockerfile:1",
    "docker.io/docker/dockerfile:1.4@sha256:" + "a" * 64,
    "docker/dockerfile:experimental",
]
OTHERS = [
    "ghcr.io/acme/frontend:1",
    "docker/dockerfile-upstream:master",
    "tonistiigi/dockerfile:runmount20180618",
    "docker/dockerfile:2",
    "docker/dockerfile:1.7@sha256:short",
    "example.com:5000/docker/dockerfile:1",
]


@pytest.mark.parametrize("image", BUILTIN)
def test_the_builtin_frontend_is_named_in_a_note(image: str) -> None:
    note = check_syntax(image)
    assert note == f"# syntax={image}: using lamina's built-in Dockerfile frontend (BuildKit's Dockerfile 1.x syntax)"


@pytest.mark.parametrize("image", OTHERS)
def test_other_frontend_images_are_one_line_errors(image: str) -> None:
    with pytest.raises(DockerfileError) as err:
        check_syntax(image)
    message = str(err.value)
    assert f"# syntax={image}: lamina cannot run other frontend images" in message and "\n" not in message


def test_the_build_arg_overrides_the_directive() -> None:
    assert check_syntax(None) is None and check_syntax("", "") is None
    with pytest.raises(DockerfileError, match="--build-arg BUILDKIT_SYNTAX=acme/frontend:1: lamina cannot run"):
        check_syntax("docker/dockerfile:1", "acme/frontend:1")
    assert (check_syntax("acme/frontend:1", "docker/dockerfile:1.7") or "").startswith(
        "--build-arg BUILDKIT_SYNTAX=docker/dockerfile:1.7: using"
    )


def test_convert_refuses_before_resolving_anything() -> None:
    resolver = Resolver()
    with pytest.raises(DockerfileError, match="# syntax=acme/frontend:1: lamina cannot run"):
        run("# syntax=acme/frontend:1\nFROM does-not-exist-anywhere\n", resolver)
    assert resolver.calls == []
    graph = run("# escape=`\n# syntax=docker/dockerfile:1\nFROM busybox\n")
    assert graph.warnings == (
        "# syntax=docker/dockerfile:1: using lamina's built-in Dockerfile frontend (BuildKit's Dockerfile 1.x syntax)",
    )


def _build(tmp_path: Path, dockerfile: str, *flags: str) -> subprocess.CompletedProcess[str]:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    argv = [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(tmp_path / "state"),
            *flags, "--output", f"type=oci,dest={tmp_path / 'out.tar'}", str(context)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_cli_says_it_once_even_for_two_platforms(tmp_path: Path) -> None:
    done = _build(tmp_path, "# syntax=docker/dockerfile:1.7-labs\nFROM scratch\nLABEL a=b\n",
                  "--platform", "linux/amd64,linux/arm64")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("# syntax=docker/dockerfile:1.7-labs: using lamina's built-in Dockerfile frontend") == 1


def test_cli_refuses_another_frontend_in_one_line(tmp_path: Path) -> None:
    done = _build(tmp_path, "# syntax=ghcr.io/acme/frontend:2\nFROM scratch\nLABEL a=b\n")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: Dockerfile: # syntax=ghcr.io/acme/frontend:2: lamina cannot run other frontend images, only its"
        " built-in Dockerfile frontend; remove the line or use # syntax=docker/dockerfile:1"
    ]
    assert not (tmp_path / "out.tar").exists()

"""The public benchmark corpus (``bench/corpus/``) stays usable: every project's Dockerfile converts with
lamina's frontend (base image as ``--build-arg BASE``), before and after its scripted changes, and each
``.source.patch`` / ``.dependency.patch`` applies cleanly to a copy and changes what it promises (a
source change leaves the dependency files alone; a dependency change touches them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lamina.build.dockerfile import convert
from lamina.oci import ContainerConfig, ImageConfig, Platform

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "corpus"
PROJECTS = ("python-web", "node-api", "c-multistage", "docker-init-python", "docker-init-node")
DEPENDENCY_FILES = {"python-web": {"requirements.txt"}, "node-api": {"package.json", "package-lock.json"},
                    "c-multistage": {"Dockerfile"}, "docker-init-python": {"requirements.txt"},
                    "docker-init-node": {"package.json", "package-lock.json"}}


def _resolve(ref: str, platform: Platform) -> ImageConfig:
    assert ref == "registry.test/bench/debian:bookworm", ref
    return ImageConfig(config=ContainerConfig({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"]}))


def _changed(project: str, change: str, dest: Path) -> set[str]:
    shutil.copytree(CORPUS / project, dest)
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    patch = CORPUS / f"{project}.{change}.patch"
    proc = subprocess.run(["patch", "-p1", "--forward", "--batch", "-d", str(dest), "-i", str(patch)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "offset" not in proc.stdout and "fuzz" not in proc.stdout, proc.stdout
    return {str(p) for p, data in before.items() if (dest / p).read_bytes() != data}


@pytest.mark.parametrize("project", PROJECTS)
def test_dockerfile_converts_and_patches_apply(project: str, tmp_path: Path) -> None:
    if shutil.which("patch") is None:
        pytest.fail("the corpus needs patch(1): scripts/install-system-deps.sh installs it")
    source = _changed(project, "source", tmp_path / "source")
    dependency = _changed(project, "dependency", tmp_path / "dependency")
    assert source and not source & DEPENDENCY_FILES[project]
    assert DEPENDENCY_FILES[project] <= dependency
    for tree in (CORPUS / project, tmp_path / "source", tmp_path / "dependency"):
        graph = convert((tree / "Dockerfile").read_text(), resolve_base=_resolve, platform="linux/amd64",
                        build_platform="linux/amd64", build_args={"BASE": "registry.test/bench/debian:bookworm"})
        assert graph.stages


def test_docker_init_go_cross_compiles_on_the_build_platform(tmp_path: Path) -> None:
    """bench/docker_init.py builds docker-init-go for linux/amd64,linux/arm64 on an amd64 host: its ``build``
    stage (``FROM --platform=$BUILDPLATFORM``) must stay on the build platform, only ``final`` is arm64."""
    if shutil.which("patch") is None:
        pytest.fail("the corpus needs patch(1): scripts/install-system-deps.sh installs it")
    assert _changed("docker-init-go", "source", tmp_path / "source") == {"main.go"}
    for tree in (CORPUS / "docker-init-go", tmp_path / "source"):
        graph = convert((tree / "Dockerfile").read_text(), resolve_base=_resolve, platform="linux/arm64",
                        build_platform="linux/amd64", build_args={"BASE": "registry.test/bench/debian:bookworm"})
        platforms = {stage.name: stage.platform.architecture for stage in graph.stages}
        assert platforms == {"build": "amd64", "final": "arm64"}

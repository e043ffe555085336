"""ARG/ENV scoping, --build-arg, predefined proxy ARGs and automatic platform ARGs (Dockerfile reference, ARG)."""

import pytest
from dfsupport import Build, Resolver, history, target

from lamina.build.dockerfile import DockerfileError
from lamina.build.ops import RunStep
from lamina.oci import Platform


def runs(graph_stage) -> list[RunStep]:  # type: ignore[no-untyped-def]
    return [s for s in graph_stage.steps if isinstance(s, RunStep)]


def test_arg_default_and_build_arg_reference_example(build: Build) -> None:
    text = "FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username\n"
    assert history(target(build(text, build_args={"username": "what_user"}))) == [
        "USER some_user",
        "ARG username=what_user",
        "USER what_user",
    ]
    assert history(target(build(text))) == ["USER some_user", "ARG username", "USER "]


def test_env_declared_after_arg_wins(build: Build) -> None:
    text = "FROM busybox\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\n"
    (run,) = runs(target(build(text, build_args={"CONT_IMG_VER": "v2.0.1"})))
    assert "CONT_IMG_VER=v1.0.0" in run.env
    assert run.created_by == "RUN |1 CONT_IMG_VER=v1.0.0 /bin/sh -c echo $CONT_IMG_VER # buildkit"


def test_env_default_from_arg(build: Build) -> None:
    text = "FROM busybox\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\n"
    assert target(build(text)).config.env[-1] == "CONT_IMG_VER=v1.0.0"
    assert target(build(text, build_args={"CONT_IMG_VER": "v2.0.1"})).config.env[-1] == "CONT_IMG_VER=v2.0.1"


def test_global_arg_only_in_from_unless_redeclared() -> None:
    from dfsupport import run

    resolver = Resolver({"busybox:latest": {}, "busybox:1.36": {}})
    text = "ARG VERSION=latest\nFROM busybox:$VERSION\nARG VERSION\nRUN echo $VERSION > image_version\n"
    stage = target(run(text, resolver))
    assert stage.base.ref == "busybox:latest"  # type: ignore[union-attr]
    assert "VERSION=latest" in runs(stage)[0].env
    stage = target(run(text, resolver, build_args={"VERSION": "1.36"}))
    assert stage.base.ref == "busybox:1.36"  # type: ignore[union-attr]
    assert "VERSION=1.36" in runs(stage)[0].env
    hidden = target(run("ARG VERSION=latest\nFROM busybox:$VERSION\nRUN echo $VERSION\n", resolver))
    (run_step,) = runs(hidden)
    assert not any(e.startswith("VERSION=") for e in run_step.env)
    assert run_step.created_by == "RUN /bin/sh -c echo $VERSION # buildkit"


def test_arg_scope_ends_with_the_stage(build: Build) -> None:
    graph = build("FROM busybox AS a\nARG X=1\nRUN true\nFROM busybox\nCOPY --from=a /x /x\nRUN echo $X\n")
    assert not any(e.startswith("X=") for e in runs(target(graph))[0].env)


def test_stage_inherits_args_of_its_base_stage(build: Build) -> None:
    graph = build("FROM busybox AS a\nARG X=1\nFROM a\nRUN echo $X\n")
    (run,) = runs(target(graph))
    assert "X=1" in run.env and run.created_by.startswith("RUN |1 X=1 ")


def test_arg_default_is_expanded(build: Build) -> None:
    stage = target(build("FROM busybox\nENV A=x\nARG B=$A-y\nRUN true\n"))
    assert runs(stage)[0].env[-1] == "B=x-y"


def test_required_variable_error(build: Build) -> None:
    with pytest.raises(DockerfileError) as err:
        build('FROM busybox\nARG X\nENV Y="${X:?X must be set}"\n')
    assert str(err.value).startswith("Dockerfile:3: ENV: ")
    assert str(err.value).endswith("X: X must be set")


def test_proxy_args_reach_run_but_not_history(build: Build) -> None:
    graph = build("FROM busybox\nRUN true\n", build_args={"http_proxy": "http://p:3128", "NO_PROXY": "local"})
    (run,) = runs(target(graph))
    assert run.proxy_env == (
        "HTTP_PROXY=http://p:3128",
        "http_proxy=http://p:3128",
        "NO_PROXY=local",
        "no_proxy=local",
    )
    assert not any("proxy" in e.lower() for e in run.env)
    assert run.created_by == "RUN /bin/sh -c true # buildkit"
    assert graph.warnings == ()
    declared = target(build("FROM busybox\nARG HTTP_PROXY\nRUN true\n", build_args={"HTTP_PROXY": "x"}))
    assert runs(declared)[0].created_by == "RUN |1 HTTP_PROXY=x /bin/sh -c true # buildkit"


def test_unconsumed_build_args_warn(build: Build) -> None:
    graph = build("ARG USED\nFROM busybox\nARG ALSO\n", build_args={"USED": "1", "ALSO": "2", "NOPE": "3"})
    assert graph.warnings == ("one or more build-args [NOPE] were not consumed",)


def test_platform_args() -> None:
    from dfsupport import run

    resolver = Resolver()
    graph = run(
        "FROM --platform=$BUILDPLATFORM busybox AS b\nARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDOS\nRUN true\n"
        "FROM busybox\nARG TARGETVARIANT\nRUN true\n",
        resolver,
        target="b",
        platform="linux/arm64",
        build_platform="linux/amd64",
    )
    stage = target(graph)
    assert stage.platform == Platform(architecture="amd64", os="linux")
    assert resolver.calls == [("busybox", Platform(architecture="amd64", os="linux"))]
    env = runs(stage)[0].env
    assert "TARGETPLATFORM=linux/arm64" in env and "TARGETARCH=arm64" in env and "BUILDOS=linux" in env
    assert not any(e.startswith("BUILDPLATFORM=") for e in env)  # not declared in the stage
    other = target(run("FROM busybox\nARG TARGETVARIANT\nARG TARGETPLATFORM\nRUN true\n", platform="linux/arm/v7"))
    assert other.platform == Platform(architecture="arm", os="linux", variant="v7")
    assert "TARGETVARIANT=v7" in runs(other)[0].env and "TARGETPLATFORM=linux/arm/v7" in runs(other)[0].env


def test_stage_default_beats_global_platform_arg(build: Build) -> None:
    stage = target(build("FROM busybox\nARG TARGETPLATFORM=linux/s390x\nRUN true\n", platform="linux/arm64"))
    assert "TARGETPLATFORM=linux/s390x" in runs(stage)[0].env

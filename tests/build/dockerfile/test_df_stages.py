"""Multi-stage graphs: pruning to the target, FROM <stage>, COPY --from, ONBUILD triggers, base configs, errors."""

import pytest
from dfsupport import Build, Resolver, history, run, target

from lamina.build.dockerfile import DockerfileError
from lamina.build.ops import BaseImage, CopyStep, RunStep, Scratch, StageBase
from lamina.oci import Platform

MULTI = (
    "FROM busybox AS builder\nRUN make\n"  # 0
    "FROM app:base AS unused\nRUN true\n"  # 1
    "FROM nopath AS tools\nRUN tool\n"  # 2
    "FROM scratch\nCOPY --from=builder /out /bin/\nCOPY --from=2 /t /t\n"  # 3
)


def test_only_needed_stages_in_dependency_order() -> None:
    resolver = Resolver()
    graph = run(MULTI, resolver)
    assert [s.index for s in graph.stages] == [0, 2, 3]
    assert graph.target == 3 and target(graph).base == Scratch()
    assert [ref for ref, _ in resolver.calls] == ["busybox", "nopath"]  # the unused stage's base is never fetched
    copies = [s for s in target(graph).steps if isinstance(s, CopyStep)]
    assert [(c.from_stage, c.from_image) for c in copies] == [(0, None), (2, None)]


def test_target_selects_a_stage(build: Build) -> None:
    graph = build(MULTI, target="UNUSED")
    assert [s.index for s in graph.stages] == [1] and graph.target == 1
    assert target(graph).name == "unused"


def test_unknown_target_lists_stages(build: Build) -> None:
    with pytest.raises(DockerfileError) as err:
        build(MULTI, target="buidler")
    assert str(err.value) == (
        "Dockerfile: target stage 'buidler' could not be found (did you mean builder?) (stages: builder, unused, tools)"
    )


def test_scratch_and_missing_path_get_docker_defaults(build: Build) -> None:
    scratch = target(build("FROM scratch\nENV A=1\n"))
    assert scratch.config.dump() == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"],
        "WorkingDir": "/",
    }
    nopath = target(build("FROM nopath\nRUN env\n"))
    assert nopath.config.env == ["LANG=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_base_config_is_inherited(build: Build) -> None:
    stage = target(build("FROM app:base\nRUN id\nCOPY a b\nWORKDIR sub\n"))
    run_step, copy_step, workdir = stage.steps
    assert isinstance(run_step, RunStep)
    assert (run_step.user, run_step.workdir, run_step.env) == ("app", "/srv", ("PATH=/usr/bin:/bin", "HOME=/home/app"))
    assert isinstance(copy_step, CopyStep) and (copy_step.dest, copy_step.user) == ("/srv/b", "app")
    assert workdir.created_by == "WORKDIR /srv/sub"
    assert stage.config.get("Cmd") == ["serve"] and stage.config.get("Labels") == {"from": "base"}


def test_from_stage_continues_its_state(build: Build) -> None:
    graph = build('FROM busybox AS base\nENV A=1\nWORKDIR /w\nUSER u\nCMD ["x"]\nFROM base\nRUN pwd\n')
    stage = target(graph)
    assert stage.base == StageBase(0) and [s.index for s in graph.stages] == [0, 1]
    (run_step,) = stage.steps
    assert isinstance(run_step, RunStep) and (run_step.workdir, run_step.user) == ("/w", "u")
    assert "A=1" in run_step.env and stage.config.get("Cmd") == ["x"]


def test_copy_from_index_image_and_errors(build: Build) -> None:
    graph = build(
        "FROM busybox AS Builder\nRUN a\nFROM busybox\nCOPY --from=BUILDER /a /a\nCOPY --from=nginx:1.27 /b /b\n"
    )
    first, second = (s for s in target(graph).steps if isinstance(s, CopyStep))
    assert first.from_stage == 0 and second.from_image == "nginx:1.27" and second.from_stage is None
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: .*needs to be defined before"):
        build("FROM busybox AS first\nCOPY --from=later /a /a\nFROM busybox AS later\n", target="first")
    with pytest.raises(DockerfileError, match="invalid stage index 5"):
        build("FROM busybox\nRUN a\nFROM busybox\nCOPY --from=5 /a /a\n")
    with pytest.raises(DockerfileError, match="variable expansion is not supported for --from"):
        build("FROM busybox\nCOPY --from=$X /a /a\n")
    with pytest.raises(DockerfileError, match="no such stage"):
        build("FROM busybox AS one\nFROM busybox\nCOPY --from=Not_A+Ref /a /a\n")


def test_image_onbuild_triggers_run_after_from() -> None:
    resolver = Resolver({"onbuild:1": {"Env": ["PATH=/bin"], "OnBuild": ["COPY --from=assets /a /a", "RUN make"]}})
    graph = run("FROM busybox AS assets\nRUN gen\nFROM busybox AS other\nFROM onbuild:1\nRUN after\n", resolver)
    assert [s.index for s in graph.stages] == [0, 2]  # the trigger's COPY --from pulled in "assets"
    stage = target(graph)
    assert [s.created_by for s in stage.steps] == [
        "COPY /a /a # buildkit",
        "RUN /bin/sh -c make # buildkit",
        "RUN /bin/sh -c after # buildkit",
    ]
    assert [s.line for s in stage.steps] == [4, 4, 5]  # triggers carry the FROM line
    assert "OnBuild" not in stage.config.values  # consumed, not inherited


def test_stage_onbuild_triggers_in_derived_stage(build: Build) -> None:
    graph = build("FROM busybox AS base\nONBUILD RUN echo triggered\nRUN own\nFROM base\nRUN next\n")
    base, derived = graph.stages
    assert base.config.get("OnBuild") == ["RUN echo triggered"]
    assert history(base) == ["RUN /bin/sh -c own # buildkit"]
    assert history(derived) == ["RUN /bin/sh -c echo triggered # buildkit", "RUN /bin/sh -c next # buildkit"]
    assert "OnBuild" not in derived.config.values


def test_onbuild_heredoc_is_kept(build: Build) -> None:
    stage = target(build("FROM busybox\nONBUILD COPY <<EOF /x\nhi\nEOF\nRUN a\n"))
    assert stage.config.get("OnBuild") == ["COPY <<EOF /x\nhi\nEOF"]


def test_from_platform_flag() -> None:
    resolver = Resolver()
    stage = target(run("FROM --platform=linux/arm64 busybox\nRUN a\n", resolver, platform="linux/amd64"))
    assert stage.platform == Platform(architecture="arm64", os="linux")
    assert resolver.calls == [("busybox", Platform(architecture="arm64", os="linux"))]
    assert stage.base == BaseImage("busybox")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ARG X\nFROM $X\n", "Dockerfile:2: base name ($X) should not be blank"),
        ("RUN a\nFROM busybox\n", "Dockerfile:1: RUN before the first FROM: no build stage in current context"),
        ("FROM busybox AS a\nFROM busybox AS a\n", "Dockerfile:2: duplicate stage name 'a'"),
        ("FROM busybox AS 1a\n", "Dockerfile:1: invalid name for build stage: '1a'"),
        ("FROM busybox AS\n", "Dockerfile:1: FROM requires either one or three arguments"),
        ("FROM\n", "Dockerfile:1: FROM requires either one or three arguments"),
        ("FROM missing:1\n", "Dockerfile:1: FROM missing:1: missing:1: not found"),
        ("FROM --platform=linux/amd46 busybox\n", "Dockerfile:1: FROM --platform: invalid platform 'linux/amd46'"),
        ("ARG P\nFROM --platform=$P busybox\n", "Dockerfile:2: empty platform value from expression $P"),
    ],
)
def test_stage_errors(build: Build, text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as err:
        build(text)
    assert str(err.value).startswith(message)


def test_bad_trigger_names_the_from_line() -> None:
    resolver = Resolver({"bad:1": {"OnBuild": ["RUNN make"]}})
    with pytest.raises(DockerfileError) as err:
        run("FROM busybox\nRUN a\nFROM bad:1\n", resolver)
    assert str(err.value).startswith("Dockerfile:3: ONBUILD trigger 'RUNN make': unknown instruction: RUNN")


def test_syntax_directive_names_the_builtin_frontend_in_a_note(build: Build) -> None:
    graph = build("# syntax=docker/dockerfile:1\nFROM busybox\n")
    assert graph.warnings == (
        "# syntax=docker/dockerfile:1: using lamina's built-in Dockerfile frontend (BuildKit's Dockerfile 1.x syntax)",
    )

"""Golden tests: one Dockerfile per instruction, checked against the BuildGraph fields Docker defines."""

import pytest
from dfsupport import Build, Resolver, history, target

from lamina.build.dockerfile import DockerfileError
from lamina.build.ops import CopyStep, MetaStep, RunStep, WorkdirStep


def test_reference_image_history_texts(build: Build) -> None:
    # The Dockerfile behind tests/data/buildkit-cache/image-config.json, and BuildKit's history.
    stage = target(
        build(
            "FROM busybox\n"
            "ENV APP_HOME=/app GREETING=hello\n"
            "WORKDIR /app\n"
            'RUN mkdir -p /app/data && echo "step1 $GREETING" > /app/data/step1.txt && sleep 2\n'
            "COPY files/ /app/files/\n"
            'CMD ["sh", "-c", "cat /app/data/combined.txt"]\n'
        )
    )
    assert history(stage) == [
        "ENV APP_HOME=/app GREETING=hello",
        "WORKDIR /app",
        'RUN /bin/sh -c mkdir -p /app/data && echo "step1 $GREETING" > /app/data/step1.txt && sleep 2 # buildkit',
        "COPY files/ /app/files/ # buildkit",
        'CMD ["sh" "-c" "cat /app/data/combined.txt"]',
    ]
    assert stage.config.dump() == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_HOME=/app", "GREETING=hello"],
        "Cmd": ["sh", "-c", "cat /app/data/combined.txt"],
        "WorkingDir": "/app",
        "ArgsEscaped": True,
    }
    assert [type(s) for s in stage.steps] == [MetaStep, WorkdirStep, RunStep, CopyStep, MetaStep]
    assert [s.line for s in stage.steps] == [2, 3, 4, 5, 6]


def test_run_forms_and_shell(build: Build) -> None:
    stage = target(
        build(
            'FROM busybox\nRUN echo $HOME\nRUN ["echo", "$HOME"]\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\n'
            "RUN --network=none echo hi\n"
        )
    )
    run1, run2, shell, run3 = stage.steps
    assert isinstance(run1, RunStep) and run1.argv == ("/bin/sh", "-c", "echo $HOME")  # RUN never expands
    assert isinstance(run2, RunStep) and run2.argv == ("echo", "$HOME")
    assert run2.created_by == "RUN echo $HOME # buildkit"
    assert shell.created_by == "SHELL [/bin/bash -o pipefail -c]"
    assert isinstance(run3, RunStep) and run3.argv == ("/bin/bash", "-o", "pipefail", "-c", "echo hi")
    assert run3.network == "none" and run1.network == "default"
    assert run1.security == "sandbox"
    assert stage.config.get("Shell") == ["/bin/bash", "-o", "pipefail", "-c"]


def test_run_heredocs(build: Build) -> None:
    stage = target(
        build(
            "FROM busybox\n"
            "RUN <<EOF\necho one\necho two\nEOF\n"
            "RUN <<-EOF\n\techo tabbed\n\tEOF\n"
            "RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"
            "RUN python3 <<EOF\nprint(2)\nEOF\n"
        )
    )
    simple, chomped, shebang, complex_ = stage.steps
    assert isinstance(simple, RunStep) and simple.argv == ("/bin/sh", "-c", "echo one\necho two\n")
    assert isinstance(chomped, RunStep) and chomped.argv == ("/bin/sh", "-c", "echo tabbed\n")
    assert isinstance(shebang, RunStep)
    assert shebang.argv == ("/bin/sh", "-c", "/dev/pipes/EOF")
    assert shebang.inline_files == (("/dev/pipes/EOF", "#!/usr/bin/env python3\nprint(1)\n"),)
    assert isinstance(complex_, RunStep) and complex_.argv == ("/bin/sh", "-c", "python3 <<EOF\nprint(2)\nEOF")


def test_run_unsupported_flags(build: Build) -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: RUN --device is not supported"):
        build("FROM busybox\nRUN --device=/dev/fuse true\n")
    with pytest.raises(DockerfileError, match="unsupported network mode"):
        build("FROM busybox\nRUN --network=bridge true\n")
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: RUN: unsupported security mode 'privileged'"):
        build("FROM busybox\nRUN --security=privileged true\n")
    (insecure,) = target(build("FROM busybox\nRUN --security=insecure true\n")).steps
    assert isinstance(insecure, RunStep) and insecure.security == "insecure"  # the builder checks --allow


def test_env_forms_and_reference_example(build: Build) -> None:
    # Reference: "ENV abc=bye def=$abc" sees the value from before the instruction.
    stage = target(
        build(
            "FROM busybox\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n"
            "ENV legacy two words\nENV q=\"a b\" r='$x'\n"
        )
    )
    env = stage.config.env
    assert env[1:] == ["abc=bye", "def=hello", "ghi=bye", "legacy=two words", "q=a b", "r=$x"]
    assert history(stage)[1] == "ENV abc=bye def=hello"


def test_label_expose_volume_user_stopsignal(build: Build) -> None:
    stage = target(
        build(
            "FROM app:base\nARG V=1.0\n"
            'LABEL version=$V "com.example.desc"="a b" \\\n  multi=xy\n'
            "EXPOSE 80 53/udp 8000-8002 ${PORT:-9000}\n"
            'VOLUME ["/data", "/logs"]\nVOLUME /a $V\n'
            "USER 1000:1000\nSTOPSIGNAL SIGKILL\n"
        )
    )
    assert stage.config.get("Labels") == {"from": "base", "version": "1.0", "com.example.desc": "a b", "multi": "xy"}
    assert stage.config.get("ExposedPorts") == {
        p: {} for p in ("80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp", "9000/tcp")
    }
    assert stage.config.get("Volumes") == {"/data": {}, "/logs": {}, "/a": {}, "1.0": {}}
    assert stage.config.get("User") == "1000:1000"
    assert stage.config.get("StopSignal") == "SIGKILL"
    assert history(stage)[1:] == [
        "LABEL version=1.0 com.example.desc=a b multi=xy",
        "EXPOSE [9000/tcp 53/udp 80/tcp 8000/tcp 8001/tcp 8002/tcp]",  # BuildKit sorts the words as written
        "VOLUME [/data /logs]",
        "VOLUME [/a 1.0]",
        "USER 1000:1000",
        "STOPSIGNAL SIGKILL",
    ]
    with pytest.raises(DockerfileError, match="invalid signal"):
        build("FROM busybox\nSTOPSIGNAL SIGNOPE\n")
    with pytest.raises(DockerfileError, match="invalid proto"):
        build("FROM busybox\nEXPOSE 80/xyz\n")


def test_workdir_relative_expanded_and_root(build: Build) -> None:
    stage = target(
        build(
            "FROM busybox\nENV DIRPATH=/path\nWORKDIR $DIRPATH/$DIRNAME\n"
            "WORKDIR a\nWORKDIR b\nUSER u\nWORKDIR /\nWORKDIR c\n"
        )
    )
    steps = stage.steps[1:]
    assert [(type(s).__name__, s.created_by) for s in steps] == [
        ("WorkdirStep", "WORKDIR /path/"),  # unset $DIRNAME is empty; BuildKit keeps an absolute path as written
        ("WorkdirStep", "WORKDIR /path/a"),
        ("WorkdirStep", "WORKDIR /path/a/b"),
        ("MetaStep", "USER u"),
        ("MetaStep", "WORKDIR /"),
        ("WorkdirStep", "WORKDIR /c"),
    ]
    assert isinstance(steps[-1], WorkdirStep) and steps[-1].user == "u"
    assert stage.config.get("WorkingDir") == "/c"


def test_cmd_entrypoint_rules(build: Build) -> None:
    r = Resolver()
    inherited = target(build("FROM app:base\nENTRYPOINT /bin/app -x\n", r))
    assert inherited.config.get("Entrypoint") == ["/bin/sh", "-c", "/bin/app -x"]
    assert inherited.config.get("Cmd") is None  # ENTRYPOINT resets the base image's CMD
    kept = target(build('FROM app:base\nCMD ["a"]\nENTRYPOINT ["e"]\n', r))
    assert kept.config.get("Cmd") == ["a"] and kept.config.get("Entrypoint") == ["e"]
    cleared = target(build("FROM app:base\nENTRYPOINT []\n", r))
    assert "Entrypoint" not in cleared.config.values
    assert history(cleared) == ["ENTRYPOINT []"]
    shell = target(build('FROM busybox\nSHELL ["/bin/bash", "-c"]\nCMD echo $HOME\n', r))
    assert shell.config.get("Cmd") == ["/bin/bash", "-c", "echo $HOME"]
    assert history(shell)[-1] == 'CMD ["/bin/bash" "-c" "echo $HOME"]'


def test_healthcheck(build: Build) -> None:
    stage = target(
        build(
            "FROM busybox\nHEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1\n"
        )
    )
    assert stage.config.get("Healthcheck") == {
        "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
        "Interval": 300_000_000_000,
        "Timeout": 3_000_000_000,
        "Retries": 3,
    }
    assert history(stage) == [
        "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/ || exit 1] Interval:5m0s Timeout:3s "
        "StartPeriod:0s StartInterval:0s Retries:3}"
    ]
    exec_form = target(build('FROM busybox\nHEALTHCHECK --start-period=1s CMD ["curl", "x"]\n'))
    assert exec_form.config.get("Healthcheck") == {"Test": ["CMD", "curl", "x"], "StartPeriod": 1_000_000_000}
    none = target(build("FROM busybox\nHEALTHCHECK NONE\n"))
    assert none.config.get("Healthcheck") == {"Test": ["NONE"]}
    with pytest.raises(DockerfileError, match="cannot be less than 1ms"):
        build("FROM busybox\nHEALTHCHECK --interval=1us CMD true\n")
    with pytest.raises(DockerfileError, match="try CMD"):
        build("FROM busybox\nHEALTHCHECK RUN true\n")


def test_maintainer_and_onbuild_recorded(build: Build) -> None:
    graph = build("FROM busybox\nMAINTAINER Jane <jane@example.com>\nONBUILD ADD . /app/src\nONBUILD RUN make\n")
    stage = target(graph)
    assert stage.author == "Jane <jane@example.com>"
    assert stage.config.get("OnBuild") == ["ADD . /app/src", "RUN make"]
    assert history(stage) == ["MAINTAINER Jane <jane@example.com>"]  # BuildKit writes no history for ONBUILD
    assert any("MAINTAINER is deprecated" in w for w in graph.warnings)
    with pytest.raises(DockerfileError, match="isn't allowed as an ONBUILD trigger"):
        build("FROM busybox\nONBUILD FROM x\n")


def test_copy_flags_and_dest(build: Build) -> None:
    stage = target(
        build(
            "FROM busybox\nWORKDIR /app\nARG OWNER=1:2\n"
            "COPY --chown=$OWNER --chmod=755 --link a b* sub/\n"
            "COPY x .\nCOPY y rel\nCOPY z /abs/\n"
            'COPY ["with space", "/dst dir/"]\n'
            "ADD --exclude=*.md https://example.com/f.tar.gz archive.tar /opt/\n"
        )
    )
    copies = [s for s in stage.steps if isinstance(s, CopyStep)]
    first = copies[0]
    assert (first.sources, first.dest, first.chown, first.chmod, first.link) == (
        ("a", "b*"),
        "/app/sub/",
        "1:2",
        "755",
        False,  # BuildKit merges --link layers only without --chmod
    )
    assert first.created_by == "COPY --chown=1:2 --chmod=755 a b* sub/ # buildkit"
    assert [c.dest for c in copies[1:4]] == ["/app/", "/app/rel", "/abs/"]
    assert copies[4].sources == ("with space",) and copies[4].dest == "/dst dir/"
    add = copies[5]
    assert add.is_add and add.exclude == ("*.md",) and add.sources == ("https://example.com/f.tar.gz", "archive.tar")
    assert add.created_by == "ADD https://example.com/f.tar.gz archive.tar /opt/ # buildkit"
    with pytest.raises(DockerfileError, match="invalid --chmod=999"):
        build("FROM busybox\nCOPY --chmod=999 a /b\n")
    with pytest.raises(DockerfileError, match="Destination could not be determined"):
        build("FROM busybox\nCOPY a\n")
    with pytest.raises(DockerfileError, match="can't be a URL for COPY"):
        build("FROM busybox\nCOPY http://x/y /z\n")


def test_copy_heredocs(build: Build) -> None:
    stage = target(
        build(
            "FROM busybox\nENV NAME=world\n"
            'COPY <<EOF /greeting\nhello $NAME "quoted"\nEOF\n'
            "COPY <<'EOF' /literal\nhello $NAME\nEOF\n"
            "COPY <<-EOF <<EOF2 /dir/\n\tone $NAME\n\tEOF\ntwo\nEOF2\n"
        )
    )
    expanded, literal, two = (s for s in stage.steps if isinstance(s, CopyStep))
    assert expanded.heredocs == (("EOF", 'hello world "quoted"\n'),) and expanded.sources == ()
    assert literal.heredocs == (("EOF", "hello $NAME\n"),)
    assert two.heredocs == (("EOF", "one world\n"), ("EOF2", "two\n"))
    assert two.created_by == "COPY <<EOF <<EOF2 /dir/ # buildkit"


def test_escape_directive_in_words(build: Build) -> None:
    stage = target(build("# escape=`\nFROM busybox\nENV A=`$HOME B=c:\\x\nCOPY `$X c:\\dest\\\n"))
    assert stage.config.env[1:] == ["A=$HOME", "B=c:\\x"]
    copy = stage.steps[1]
    assert isinstance(copy, CopyStep) and copy.sources == ("$X",)


def test_add_checksum(build: Build) -> None:
    digest = "sha256:" + "a" * 64
    stage = target(build(f"FROM busybox\nADD --checksum={digest} https://example.com/x.tgz /x\n"))
    (add,) = stage.steps
    assert isinstance(add, CopyStep) and add.checksum == digest and add.is_add
    with pytest.raises(DockerfileError, match="requires an HTTP"):
        build(f"FROM busybox\nADD --checksum={digest} local.tgz /x\n")
    with pytest.raises(DockerfileError, match="multiple sources"):
        build(f"FROM busybox\nADD --checksum={digest} https://a/1 https://a/2 /x/\n")
    with pytest.raises(DockerfileError, match="ADD --checksum=md5:x"):
        build("FROM busybox\nADD --checksum=md5:x https://a/1 /x\n")
    with pytest.raises(DockerfileError, match="unknown flag: --checksum"):
        build(f"FROM busybox\nCOPY --checksum={digest} a /x\n")


def test_flags_on_instructions_without_flags_are_rejected(build: Build) -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: ENV: unknown flag: --x"):
        build("FROM busybox\nENV --x=1 A=b\n")


def test_predefined_build_args_do_not_warn(build: Build) -> None:
    args = {"SOURCE_DATE_EPOCH": "0", "BUILDKIT_INLINE_CACHE": "1", "TARGETARCH": "amd64", "ftp_proxy": "x"}
    assert build("FROM busybox\n", build_args=args).warnings == ()


def test_steps_are_shown_as_written(build: Build) -> None:
    """Progress and error lines name a step the way the Dockerfile has it (BuildKit's ``[2/4] RUN ...``),
    not by its history text (``RUN /bin/sh -c ... # buildkit``)."""
    stage = target(
        build(
            "FROM busybox\n"
            "run --network=none apt-get update \\\n    && echo done\n"
            'RUN ["echo", "exec form"]\n'
            "COPY --chown=1:1 a.txt /app/\n"
            "WORKDIR /app\n"
            "ENV A=1\n"
            "RUN <<EOF\necho from a heredoc\nEOF\n"
        )
    )
    shown = [step.shown for step in stage.steps]
    assert shown == [
        "RUN --network=none apt-get update     && echo done",
        'RUN ["echo", "exec form"]',
        "COPY --chown=1:1 a.txt /app/",
        "WORKDIR /app",
        "ENV A=1",
        "RUN <<EOF",
    ]
    assert all("# buildkit" not in text and "/bin/sh -c" not in text for text in shown)

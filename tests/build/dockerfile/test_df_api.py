"""The frontend's public surface (pinned) and its one-line errors."""

import pytest
from dfsupport import Build

import lamina.build.dockerfile as frontend
from lamina.build.dockerfile import DockerfileError


def test_public_api_is_pinned() -> None:
    assert set(frontend.__all__) == {
        "PLATFORM_ARGS",
        "PROXY_ARGS",
        "Dockerfile",
        "DockerfileError",
        "ExpansionError",
        "Heredoc",
        "Instruction",
        "ResolveBase",
        "convert",
        "host_platform",
        "parse",
        "process_word",
        "process_words",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('FROM busybox\nENV A="abc\n', "Dockerfile:2: ENV: failed to process '\"abc': unexpected end of statement"),
        ("FROM busybox\nLABEL a='b\n", 'Dockerfile:2: LABEL: failed to process "\'b": unexpected end of statement'),
        ("FROM busybox\nWORKDIR ${X\n", "Dockerfile:2: WORKDIR: failed to process '${X': syntax error: missing '}'"),
        ("FROM busybox\nUSER\n", "Dockerfile:2: USER requires exactly one argument"),
        ("FROM busybox\nSHELL /bin/bash -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"),
        ("FROM busybox\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile:2: COPY cannot accept a heredoc as a destination"),
        ("FROM busybox\nENTRYPOINT\n", ""),
    ],
)
def test_errors_are_one_line_with_the_line_number(build: Build, text: str, message: str) -> None:
    if not message:
        build(text)  # an empty ENTRYPOINT is allowed (BuildKit: it clears nothing and sets /bin/sh -c "")
        return
    with pytest.raises(DockerfileError) as err:
        build(text)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)

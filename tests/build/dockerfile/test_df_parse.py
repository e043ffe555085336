"""Parsing on top of BuildKit's parser: heredoc attributes, the escape directive, errors with lines, flags."""

import pytest

from lamina.build.dockerfile import DockerfileError, parse
from lamina.build.dockerfile.golang import go_duration, go_quote_list, parse_go_duration
from lamina.build.dockerfile.parse import parse_flags, parse_heredoc


def test_lines_forms_and_continuations() -> None:
    df = parse('# syntax=docker/dockerfile:1\nFROM x\n# c\nRUN echo a \\\n  b\nCMD ["a", "b"]\nCMD a b\n')
    run, cmd_json, cmd_shell = df.instructions[1:]
    assert (run.cmd, run.line, run.end_line, run.json) == ("RUN", 4, 5, False)
    assert run.args == ("echo a   b",)
    assert (cmd_json.json, cmd_json.args) == (True, ("a", "b"))
    assert (cmd_shell.json, cmd_shell.args) == (False, ("a b",))
    assert df.escape == "\\"


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  /b\n")
    assert df.escape == "`"
    assert df.instructions[1].args == ("dir c:\\   /b",)


def test_escape_directive_after_blank_line_is_a_comment() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:5: unknown instruction: b"):
        parse("\n# escape=`\nFROM x\nRUN a `\nb\n")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("<<EOF", ("EOF", False, True)),
        ("<<-EOF", ("EOF", True, True)),
        ('<<"EOF"', ("EOF", False, False)),
        ("<<-'EOT'", ("EOT", True, False)),
        ("3<<EOF", ("EOF", False, True)),
        ("<<", None),
        ("file", None),
    ],
)
def test_parse_heredoc_word(word: str, expected: tuple[str, bool, bool] | None) -> None:
    assert parse_heredoc(word) == expected


def test_heredoc_chomp_and_quote() -> None:
    df = parse('FROM x\nCOPY <<-EOF <<"TWO" /d/\n\tindented\n\t\tmore\n\tEOF\n$X\nTWO\n')
    one, two = df.instructions[1].heredocs
    assert (one.name, one.chomp, one.expand, one.text) == ("EOF", True, True, "indented\nmore\n")
    assert (two.name, two.chomp, two.expand, two.text) == ("TWO", False, False, "$X\n")


def test_unknown_instruction_suggests() -> None:
    with pytest.raises(DockerfileError) as err:
        parse("FROM x\nRUNN echo\n")
    assert str(err.value) == "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM x\nRUN echo\nRUN <<EOF\nhi\n", 3, "unterminated heredoc"),
        ("FROM x\nRUN a\nENV A\n", 3, "ENV must have two arguments"),
        ("", 0, "file with no instructions"),
        ("# escape=x\nFROM x\n", 1, "invalid escape token"),
    ],
)
def test_parser_errors_have_lines(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError, match=message) as err:
        parse(text)
    assert err.value.line == line


def test_flags() -> None:
    inst = parse("FROM x\nCOPY --from=a --link --exclude=*.md --exclude=x a b\n").instructions[1]
    flags = parse_flags(inst, strings=("from",), bools=("link",), lists=("exclude",))
    assert flags == {"from": "a", "link": True, "exclude": ["*.md", "x"]}
    with pytest.raises(DockerfileError, match="unknown flag: --form"):
        parse_flags(parse("FROM x\nCOPY --form=a a b\n").instructions[1], strings=("from",))
    with pytest.raises(DockerfileError, match="missing a value on flag: --from"):
        parse_flags(parse("FROM x\nCOPY --from a b\n").instructions[1], strings=("from",))
    with pytest.raises(DockerfileError, match="duplicate flag"):
        parse_flags(parse("FROM x\nCOPY --from=a --from=b a b\n").instructions[1], strings=("from",))
    with pytest.raises(DockerfileError, match="expecting boolean value"):
        parse_flags(parse("FROM x\nCOPY --link=maybe a b\n").instructions[1], bools=("link",))


def test_go_formatting() -> None:
    assert go_quote_list(["sh", "-c", 'echo "hi"\n']) == '["sh" "-c" "echo \\"hi\\"\\n"]'
    assert go_quote_list(None) == "[]"
    assert [go_duration(n) for n in (0, 1500, 2_000_000, 90 * 10**9, 3600 * 10**9, 1_500_000_000)] == [
        "0s",
        "1.5µs",
        "2ms",
        "1m30s",
        "1h0m0s",
        "1.5s",
    ]
    assert parse_go_duration("1m30s") == 90 * 10**9
    assert parse_go_duration("1.5h") == 5400 * 10**9
    assert parse_go_duration("300ms") == 300_000_000
    assert parse_go_duration("0") == 0
    for bad in ("5", "abc", "", "1x"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_directives() -> None:
    df = parse("# syntax=docker/dockerfile:1.7\n# check=skip=all\n#escape=`\nFROM x\n")
    assert df.directives == {"syntax": "docker/dockerfile:1.7", "check": "skip=all", "escape": "`"}
    assert df.escape == "`"
    assert parse("FROM x\n# escape=`\n").escape == "\\"  # not a directive after an instruction

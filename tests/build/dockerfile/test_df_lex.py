"""Docker's word processing: golden cases from the Dockerfile reference ("Environment replacement")."""

import pytest

from lamina.build.dockerfile import ExpansionError, process_word, process_words
from lamina.build.dockerfile.lex import Lexer

ENV = {"FOO": "/bar", "EMPTY": "", "NAME": "file.tar.gz", "PATHV": "/a/b/c"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$FOO", "/bar"),
        ("${FOO}", "/bar"),
        ("${FOO}/x", "/bar/x"),
        ("$FOO/x", "/bar/x"),
        ("\\$FOO", "$FOO"),  # the reference: COPY \$FOO /quux copies a file named $FOO
        ("$UNSET", ""),
        ("${UNSET:-word}", "word"),
        ("${EMPTY:-word}", "word"),
        ("${EMPTY-word}", ""),
        ("${UNSET-word}", "word"),
        ("${FOO:-word}", "/bar"),
        ("${FOO:+word}", "word"),
        ("${EMPTY:+word}", ""),
        ("${EMPTY+word}", "word"),
        ("${UNSET:+word}", ""),
        ("${UNSET:-$FOO}", "/bar"),
        ("'$FOO'", "$FOO"),  # single quotes are literal
        ('"$FOO"', "/bar"),
        ('"a \\" b"', 'a " b'),
        ('"a \\x b"', "a \\x b"),  # inside double quotes only \" \$ \\ are escapes
        ("a\\ b", "a b"),
        ("${NAME%.gz}", "file.tar"),
        ("${NAME%%.*}", "file"),
        ("${NAME#*.}", "tar.gz"),
        ("${NAME##*.}", "gz"),
        ("${PATHV/\\//:}", ":a/b/c"),
        ("${PATHV//\\//:}", ":a:b:c"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1", ""),
        ("x${FOO}y${FOO}", "x/bary/bar"),
    ],
)
def test_process_word(word: str, expected: str) -> None:
    assert process_word(word, ENV) == expected


def test_backtick_escape() -> None:
    assert process_word("`$FOO", ENV, escape="`") == "$FOO"
    assert process_word("c:\\dir", ENV, escape="`") == "c:\\dir"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${UNSET:?must be set}", "UNSET: must be set"),
        ("${UNSET?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${FOO", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:x}", "bad substitution"),
        ("${FOO:=x}", "unsupported modifier (:=)"),
        ("'abc", "matching single-quote"),
        ('"abc', "matching double-quote"),
    ],
)
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ExpansionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        process_word(word, ENV)


def test_required_set_passes() -> None:
    assert process_word("${EMPTY?}", ENV) == ""
    assert process_word("${FOO:?x}", ENV) == "/bar"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("a b  c", ["a", "b", "c"]),
        ('"a b" c', ["a b", "c"]),
        ("$SPACED x", ["1", "2", "x"]),  # expansion result splits
        ('"$SPACED" x', ["1 2", "x"]),  # a quoted one does not
        ("", []),
        ('""', []),
    ],
)
def test_process_words(word: str, expected: list[str]) -> None:
    assert process_words(word, {"SPACED": "1 2"}) == expected


def test_heredoc_mode_keeps_quotes_and_unset() -> None:
    raw = Lexer(skip_quotes=True)
    assert raw.process("say \"$FOO\" '$FOO'", ENV)[0] == "say \"/bar\" '/bar'"
    keep = Lexer(skip_unset=True)
    assert keep.process("$UNSET ${UNSET} ${UNSET:-d}", {})[0] == "$UNSET ${UNSET} ${UNSET:-d}"


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc"),
        ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc"),
        ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb "),
        ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  "),
        ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
        ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
        ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
        ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
        ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
        ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
        ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
        ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
            "/foo.*/*.txt - /foo..*.txt",
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
            "/tmp/bar.txt - /bar.txt",
        ),
        ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
        ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
        ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
        (
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
            "something-v1.2.3.linux-arm-v7.tar.gz",
        ),
    ],
)
def test_buildkit_substitution_cases(word: str, env: dict[str, str], expected: str) -> None:
    assert process_word(word, env) == expected


@pytest.mark.parametrize("word", ["${BAZ?ccc}", "${BAR:?bbb}", "${FOO=aaa}", "${FOO=:aaa}", "${FOO//ww}", "${FOO//}"])
def test_buildkit_substitution_errors(word: str) -> None:
    with pytest.raises(ExpansionError):
        process_word(word, {"FOO": "xxx", "BAR": ""})

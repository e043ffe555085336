"""Dockerfile text -> instructions, through BuildKit's own parser (PyPI ``dockerfile``, a Go binding).

The Go parser does the hard part (continuation lines, comments, the ``escape`` directive, JSON vs
shell form, heredoc bodies). What it does not hand over is added here, minimally: the escape token
(needed again for variable expansion), each heredoc's ``<<-`` (strip leading tabs) and quoted-delimiter
(no expansion) attributes, ONBUILD heredoc bodies, line numbers for its errors, BuildKit's flag rules
(``--name=value``, booleans, repeatable flags) and the unknown-instruction check with a suggestion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import dockerfile as _gofile

from .errors import DockerfileError, suggest
from .lex import ExpansionError, Lexer

__all__ = ["INSTRUCTIONS", "Dockerfile", "Heredoc", "Instruction", "parse", "parse_flags", "parse_heredoc"]

INSTRUCTIONS = tuple(name.upper() for name in _gofile.all_cmds())

_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_CHOMP = re.compile(r"^\t+", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Heredoc:
    """One inline document: ``<<[-]NAME`` (``chomp``: ``<<-``; ``expand``: delimiter not quoted)."""

    name: str
    content: str
    chomp: bool = False
    expand: bool = True
    fd: int = 0

    @property
    def text(self) -> str:
        """The content with leading tabs stripped for ``<<-`` (BuildKit's ChompHeredocContent)."""
        return _CHOMP.sub("", self.content) if self.chomp else self.content


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction as parsed: command, arguments, flags, heredocs and its lines."""

    cmd: str  # upper case: "RUN", "COPY", ...
    args: tuple[str, ...]  # shell form: the rest of the line as one string for RUN/CMD/ENTRYPOINT/SHELL
    json: bool = False  # exec (JSON) form
    flags: tuple[str, ...] = ()  # "--name=value" as written
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""
    line: int = 0
    end_line: int = 0
    sub: str | None = None  # ONBUILD's trigger instruction (upper case)


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile: its escape token, instructions and parser directives (``# syntax=``, ``# check=``)."""

    escape: str
    instructions: tuple[Instruction, ...]
    directives: Mapping[str, str] = field(default_factory=dict)  # lower-case name -> value


def parse(text: str) -> Dockerfile:
    """Parse a whole Dockerfile; raises DockerfileError naming the line."""
    directives = _directives(text)
    try:
        commands = _gofile.parse_string(text)
    except _gofile.GoParseError as exc:
        raise DockerfileError(str(exc), _error_line(text, str(exc))) from None
    lines = text.splitlines()
    instructions = []
    for command in commands:
        instructions.append(_instruction(command, lines))
    if not instructions:
        raise DockerfileError("file with no instructions")
    return Dockerfile(directives.get("escape", "\\"), tuple(instructions), directives)


def parse_trigger(text: str, line: int) -> Instruction:
    """One ONBUILD trigger expression (an instruction line, maybe with heredoc bodies), placed at ``line``."""
    try:
        commands = _gofile.parse_string(text)
    except _gofile.GoParseError as exc:
        raise DockerfileError(f"ONBUILD trigger {text!r}: {exc}", line) from None
    if len(commands) != 1:
        raise DockerfileError("onbuild trigger should be a single expression", line)
    try:
        parsed = _instruction(commands[0], text.splitlines())
    except DockerfileError as exc:
        raise DockerfileError(f"ONBUILD trigger {text!r}: {exc.message}", line) from None
    if parsed.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
        raise DockerfileError(f"{parsed.cmd} isn't allowed as an ONBUILD trigger", line)
    return Instruction(parsed.cmd, parsed.args, parsed.json, parsed.flags, parsed.heredocs, parsed.original, line, line)


def _directives(text: str) -> dict[str, str]:
    """Parser directives (``# escape=``, ``# syntax=``, ``# check=``): only in the leading comment block."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        found.setdefault(match.group(1).lower(), match.group(2))
    token = found.get("escape", "\\")
    if token not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token {token!r} does not match ` or \\", 1)
    return found


def _error_line(text: str, message: str) -> int:
    """The Go parser's errors carry no line: find the shortest prefix of the file that fails the same way."""
    lines = text.splitlines(keepends=True)
    for count in range(1, len(lines) + 1):
        try:
            _gofile.parse_string("".join(lines[:count]))
        except _gofile.GoParseError as exc:
            if str(exc) == message:
                return count
    return 0


def _instruction(command: _gofile.Command, lines: list[str]) -> Instruction:
    cmd = command.cmd.upper()
    line = command.start_line
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction: {command.cmd}{suggest(cmd, INSTRUCTIONS)}", line)
    args = tuple(command.value)
    heredocs = _heredocs(command, args)
    sub = command.sub_cmd.upper() if command.sub_cmd else None
    original = command.original
    if cmd == "ONBUILD":
        original = _onbuild_original(command, lines)
    return Instruction(
        cmd, args, bool(command.json), tuple(command.flags), heredocs, original, line, command.end_line, sub
    )


def _heredocs(command: _gofile.Command, args: tuple[str, ...]) -> tuple[Heredoc, ...]:
    """Pair the Go parser's heredoc bodies with the ``<<`` words that opened them."""
    if not command.heredocs:
        return ()
    words: list[tuple[str, bool, bool]] = []
    for arg in args:
        for word in arg.split() if len(args) == 1 else [arg]:
            spec = parse_heredoc(word)
            if spec is not None:
                words.append(spec)
    by_name = {name: (chomp, expand) for name, chomp, expand in words}
    out = []
    for doc in command.heredocs:
        chomp, expand = by_name.get(doc.name, (False, True))
        out.append(Heredoc(doc.name, doc.content, chomp, expand, doc.file_descriptor))
    return tuple(out)


def parse_heredoc(word: str) -> tuple[str, bool, bool] | None:
    """``(name, chomp, expand)`` when ``word`` opens a heredoc (BuildKit's ParseHeredoc), else None."""
    match = _HEREDOC.match(word)
    if not match or not match.group(3):
        return None
    rest = match.group(3)
    try:
        words = Lexer(skip_unset=True).process(rest, {})[1]
        raw = Lexer(skip_unset=True, raw_quotes=True).process(rest, {})[1]
    except ExpansionError:
        return None
    if len(words) != 1 or len(raw) != 1:
        return None
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return words[0], match.group(2) == "-", quotes == raw_quotes


def _onbuild_original(command: _gofile.Command, lines: list[str]) -> str:
    """ONBUILD's text as written; the Go binding drops a trigger's heredoc bodies, so take them from the source."""
    text = command.original
    if command.end_line > command.start_line and "<<" in text:
        body = lines[command.start_line : command.end_line]
        text = "\n".join([text, *body])
    return text


def parse_flags(
    inst: Instruction, strings: tuple[str, ...] = (), bools: tuple[str, ...] = (), lists: tuple[str, ...] = ()
) -> dict[str, str | bool | list[str]]:
    """BuildKit's BFlags: ``--name=value`` strings, ``--name[=true|false]`` booleans, repeatable lists."""
    out: dict[str, str | bool | list[str]] = {name: [] for name in lists}
    for raw in inst.flags:
        if not raw.startswith("--"):
            raise DockerfileError(f"{inst.cmd}: arg should start with -- : {raw}", inst.line)
        name, has_value, value = raw[2:].partition("=")
        if name in lists:
            if not has_value:
                raise DockerfileError(f"{inst.cmd}: missing a value on flag: --{name}", inst.line)
            listed = out[name]
            assert isinstance(listed, list)
            listed.append(value)
            continue
        if name not in strings and name not in bools:
            known = [*strings, *bools, *lists]
            hint = suggest(name, known)
            raise DockerfileError(f"{inst.cmd}: unknown flag: --{name}{hint}", inst.line)
        if name in out:
            raise DockerfileError(f"{inst.cmd}: duplicate flag specified: --{name}", inst.line)
        if name in bools:
            if not has_value or value.lower() == "true":
                out[name] = True
            elif value.lower() == "false":
                out[name] = False
            else:
                raise DockerfileError(f"{inst.cmd}: expecting boolean value for flag --{name}, not: {value}", inst.line)
        else:
            if not has_value:
                raise DockerfileError(f"{inst.cmd}: missing a value on flag: --{name}", inst.line)
            out[name] = value
    return out


def flag_str(flags: Mapping[str, str | bool | list[str]], name: str) -> str:
    value = flags.get(name, "")
    return value if isinstance(value, str) else ""

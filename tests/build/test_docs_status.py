"""docs/build.md's status tables stay true: every flag of ``lamina build``'s parser is in the flags table and
every flag there is in the parser, with the status the CLI gives it (refused rows are refused in one line,
exit 2; no other row names a refused flag); every instruction of the frontend, every instruction flag of
Docker's Dockerfile reference and every BuildKit built-in build arg is in the Dockerfile table."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from lamina.build import refusedflags
from lamina.build.builtinargs import BUILTIN_ARGS
from lamina.build.cli import configure
from lamina.build.dockerfile.parse import INSTRUCTIONS
from lamina.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "build.md"

# Every flag each instruction takes in the Dockerfile reference (docs.docker.com/reference/dockerfile, the
# frontend of BuildKit v0.32), labs included.
REFERENCE_FLAGS = {
    "FROM": ("platform",),
    "RUN": ("mount", "network", "security", "device"),
    "COPY": ("from", "chown", "chmod", "link", "parents", "exclude"),
    "ADD": ("keep-git-dir", "checksum", "chown", "chmod", "link", "unpack", "exclude"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}
_FLAG = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")
_CODE = re.compile(r"`([^`]*)`")


def _table(heading: str) -> list[tuple[str, str]]:
    """The rows (first cell, status) of the table under ``### heading`` in docs/build.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1]
    rows = []
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append((cells[0], cells[1]))
    assert rows, f"no table under ### {heading}"
    return rows


def _flags_in(cell: str) -> set[str]:
    """The flags a first cell names: the leading ``-x``/``--name`` of each code span."""
    found = set()
    for span in _CODE.findall(cell):
        match = _FLAG.match(span.strip())
        if match:
            found.add(match.group(1))
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lamina build")
    configure(parser)
    return parser


def _parser_flags() -> set[str]:
    return {opt for action in _parser()._actions for opt in action.option_strings} - {"-h", "--help"}


def test_the_flags_table_names_every_flag_of_the_parser_and_no_other() -> None:
    documented = set().union(*(_flags_in(cell) for cell, _ in _table("`lamina build` flags")))
    parser = _parser_flags()
    assert parser - documented == set(), "flags of `lamina build` missing from docs/build.md's flags table"
    assert documented - parser == set(), "flags in docs/build.md's flags table that `lamina build` does not have"


def test_refused_rows_are_exactly_the_refused_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused = set(refusedflags._REFUSED)
    rows = _table("`lamina build` flags")
    said_refused = set().union(*(_flags_in(cell) for cell, status in rows if status.startswith("refused")))
    said_refused -= {"--build-context", "--provenance", "--sbom"}  # refused for some values only: rows say which
    assert said_refused == refused
    for flag in sorted(refused):
        action = next(a for a in _parser()._actions if flag in a.option_strings)
        value = [] if action.nargs == 0 else ["x"]
        rc = main(["build", flag, *value, str(tmp_path)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith(f"error: {flag} is not supported by lamina: ") and err.count("\n") == 1
    for _cell, status in rows:  # rows quoting a refusal quote the CLI's own words
        for quoted in re.findall(r'"(--[a-z-]+ is not supported by lamina: [^"]+)"', status):
            flag = quoted.split()[0]
            assert quoted.split(": ", 1)[1] == refusedflags._REFUSED[flag][1], quoted


def test_accepted_flags_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _table("`lamina build` flags")
    accepted = set().union(*(_flags_in(cell) for cell, status in rows if status.startswith("accepted")))
    assert accepted == {"--provenance", "--sbom", "--call", *refusedflags.ALWAYS}
    rc = main(["build", "--provenance=false", "--sbom=false", "--call=build", *refusedflags.ALWAYS, str(tmp_path)])
    assert rc == 1 and "Dockerfile not found" in capsys.readouterr().err  # past the flags, to the missing file


def test_the_dockerfile_table_names_every_instruction_flag_and_builtin_arg() -> None:
    rows = _table("Dockerfile")
    cells = [cell for cell, _ in rows]
    for instruction in INSTRUCTIONS:
        assert any(re.search(rf"`{instruction}[ `]|{instruction}[,`/ ]", cell) for cell in cells), instruction
    for instruction, flags in REFERENCE_FLAGS.items():
        for flag in flags:
            assert any(instruction in cell and f"--{flag}" in cell for cell in cells), f"{instruction} --{flag}"
    for name in BUILTIN_ARGS:
        assert any(name in cell for cell in cells), name
    for directive in ("# syntax=", "# escape=", "# check="):
        assert any(directive in cell for cell in cells), directive


@pytest.mark.parametrize("heading", ["Dockerfile", "`lamina build` flags"])
def test_every_row_has_one_of_the_three_statuses(heading: str) -> None:
    for cell, status in _table(heading):
        assert re.match(r"(supported|accepted|refused)\b", status), f"{cell}: {status}"

"""``lamina build`` flag handling: parsed like buildx, and every bad input is one ``error:`` line, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.exporter import parse_output
from lamina.cli import main


def test_parse_output_forms() -> None:
    assert parse_output("type=oci,dest=out.tar") == {"type": "oci", "dest": "out.tar"}
    assert parse_output("type=local,dest=dir") == {"type": "local", "dest": "dir"}
    assert parse_output("type=registry") == {"type": "registry"}
    assert parse_output("some/dir") == {"type": "local", "dest": "some/dir"}
    for bad, match in [("type=oci", "needs dest"), ("type=tarball,dest=x", "type must be"), ("a,b", "key=value")]:
        with pytest.raises(ValueError, match=match):
            parse_output(bad)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(["build", *argv])
    return rc, capsys.readouterr().err


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, str(tmp_path / "missing"))
    assert rc == 1 and err == f"error: build context {tmp_path / 'missing'} is not a directory\n"
    rc, err = _run(capsys, str(tmp_path))
    assert rc == 1 and err == f"error: Dockerfile not found: {tmp_path / 'Dockerfile'}\n"
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    rc, err = _run(capsys, "--push", str(tmp_path))
    assert rc == 1 and err == "error: --push needs at least one -t REF\n"
    rc, err = _run(capsys, "--platform", "amd64/x/y/z", str(tmp_path))
    assert rc == 1 and "invalid platform 'amd64/x/y/z'" in err and err.count("\n") == 1
    rc, err = _run(capsys, "--output", "type=oci", str(tmp_path))
    assert rc == 1 and "needs dest=PATH" in err


def test_bad_source_date_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    rc, err = _run(capsys, str(tmp_path))
    assert rc == 1 and "invalid SOURCE_DATE_EPOCH 'yesterday'" in err


def test_build_arg_without_value_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.build.cli import _key_value

    monkeypatch.setenv("FROM_ENV", "v")
    assert _key_value("FROM_ENV") == ("FROM_ENV", "v")
    assert _key_value("A=b=c") == ("A", "b=c")

"""The CI skip guard (tests/helpers/ciskips.py) run on a small real suite in a subprocess: with
``CI=true`` a skip, a module-level skip or a non-strict xfail fails the run and is named with its
reason; strict xfails pass; without ``CI`` the same suite passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]

CONFTEST = """\
from helpers.ciskips import CiSkipGuard, ci_enabled


def pytest_configure(config):
    if ci_enabled():
        config.pluginmanager.register(CiSkipGuard(), "lamina-ci-skip-guard")
"""

SUITE = """\
import pytest


def test_passes():
    pass


@pytest.mark.xfail(strict=True, reason="known bug 7")
def test_strict_xfail():
    raise AssertionError


def test_skipped():
    pytest.skip("skopeo not installed")
"""


def _run(tmp_path: Path, files: dict[str, str], ci: str | None) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(TESTS_DIR)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


def test_a_skip_fails_the_run_in_ci_and_is_named(tmp_path: Path) -> None:
    result = _run(tmp_path, {"conftest.py": CONFTEST, "test_suite.py": SUITE}, ci="true")
    assert result.returncode == 1, result.stdout
    assert "SKIPPED IN CI test_suite.py::test_skipped: skopeo not installed" in result.stdout
    assert "test_strict_xfail" not in result.stdout.split("skipped tests fail the run")[1]
    assert "1 test(s) skipped or non-strict xfail in CI" in result.stdout


def test_without_ci_the_same_suite_passes(tmp_path: Path) -> None:
    result = _run(tmp_path, {"conftest.py": CONFTEST, "test_suite.py": SUITE}, ci=None)
    assert result.returncode == 0, result.stdout
    assert "SKIPPED IN CI" not in result.stdout
    assert _run(tmp_path, {}, ci="false").returncode == 0


def test_module_skips_and_non_strict_xfails_fail_in_ci(tmp_path: Path) -> None:
    files = {
        "conftest.py": CONFTEST,
        "test_module.py": 'import pytest\npytest.skip("needs root", allow_module_level=True)\n',
        "test_loose.py": 'import pytest\n\n@pytest.mark.xfail(reason="flaky")\ndef test_loose():\n    assert False\n',
    }
    result = _run(tmp_path, files, ci="1")
    assert result.returncode == 1, result.stdout
    assert "SKIPPED IN CI test_module.py: needs root" in result.stdout
    assert "SKIPPED IN CI test_loose.py::test_loose: non-strict xfail: flaky" in result.stdout


def test_a_clean_suite_passes_in_ci(tmp_path: Path) -> None:
    files = {"conftest.py": CONFTEST, "test_ok.py": "def test_ok():\n    pass\n"}
    result = _run(tmp_path, files, ci="true")
    assert result.returncode == 0, result.stdout
    assert "SKIPPED IN CI" not in result.stdout

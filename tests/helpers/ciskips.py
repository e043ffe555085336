"""In CI nothing may skip: a pytest plugin that fails the session when ``CI`` is set and a test skipped.

CI installs every tool and runs as root, so a skip there means a test silently stopped testing. The
plugin records each skipped test (and each non-strict xfail: an expected failure is allowed only when
``strict=True``, so that a fix that makes it pass is noticed), names them with their reasons at the end
of the run, and turns a passing exit status into a failing one. Outside CI it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

__all__ = ["CiSkipGuard", "ci_enabled"]

TRUE_VALUES = {"1", "true", "yes", "on"}


def ci_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """``CI`` set to a true value, as GitHub, GitLab and this project's ``.ci/run`` set it."""
    return environ.get("CI", "").strip().lower() in TRUE_VALUES


class CiSkipGuard:
    """Registered by ``tests/conftest.py``; collects offending reports, fails the session in CI."""

    def __init__(self) -> None:
        self.strict_xfail: set[str] = set()
        self.offenders: list[tuple[str, str]] = []

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        default_strict = bool(config.getini("xfail_strict"))
        for item in items:
            marker = item.get_closest_marker("xfail")
            if marker is not None and marker.kwargs.get("strict", default_strict):
                self.strict_xfail.add(item.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        xfail_reason = getattr(report, "wasxfail", None)
        if xfail_reason is not None:
            if report.nodeid not in self.strict_xfail:  # xfailed or xpassed without strict=True
                self.offenders.append((report.nodeid, f"non-strict xfail: {xfail_reason or 'no reason'}"))
            return
        if report.skipped:
            self.offenders.append((report.nodeid, _skip_reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a whole module skipped at import (allow_module_level=True)
            self.offenders.append((report.nodeid, _skip_reason(report)))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.offenders and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.offenders:
            return
        terminalreporter.section("CI=true: skipped tests fail the run", sep="=", red=True, bold=True)
        for nodeid, reason in self.offenders:
            terminalreporter.line(f"SKIPPED IN CI {nodeid}: {reason}")
        terminalreporter.line(
            f"{len(self.offenders)} test(s) skipped or non-strict xfail in CI, where every tool is installed and "
            "the run is root: install what is missing (scripts/install-system-deps.sh) or fix the test"
        )


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)

"""Parity with BuildKit v0.32.2: every case of tests/data/parity/ built by lamina, compared with BuildKit's image.

Each case is one test: a lamina registry on loopback gets the corpus's base image (rebuilt entry for
entry by tests/helpers/parity_base.py), lamina builds the case's context with the flags of its
build.txt into an OCI layout, and tests/helpers/parity.py compares it with ``expected/`` — manifest,
config (key order included), every layer's tar entries in order, the flattened root filesystem —
ignoring only what follows from mtimes (digests, sizes, diff_ids). The assertion message is the
bounded difference report.

To see one case's differences while working on it (as root)::

    .venv/bin/python tests/helpers/parity_run.py CASE [CASE ...] [--max N] [--keep DIR]
    .venv/bin/python tests/helpers/parity_run.py --all

``KNOWN_GAPS`` lists the cases lamina does not build identically yet: they run as strict xfails, so a
case that starts to pass fails the suite until it is taken out of the set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from helpers.parity_case import Case, CaseRun, all_cases, push_bases, run_case
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

KNOWN_GAPS: set[str] = set()  # every case builds identically now; add a case here only with a reason

CASES = all_cases()
BUILDS_AT_ONCE = max(2, min(4, os.cpu_count() or 1))  # builds wait on runc, mounts and the registry too


def _param(case: Case) -> object:
    gap = pytest.mark.xfail(strict=True, reason="known gap: lamina's image differs from BuildKit's")
    marks = [gap] if case.name in KNOWN_GAPS else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.fixture(scope="module")
def builds(
    lamina_registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[CaseRun]]]:
    """Every case's build, started at once (each with its own state dir; up to BUILDS_AT_ONCE run at a
    time) after their base images are pushed; a test waits for its own."""
    pushed: set[str] = set()
    for case in CASES:
        push_bases(case, lamina_registry.host, pushed)
    with ThreadPoolExecutor(max_workers=BUILDS_AT_ONCE, thread_name_prefix="parity") as pool:
        yield {
            case.name: pool.submit(run_case, case, lamina_registry.host, tmp_path_factory.mktemp(case.name))
            for case in CASES
        }


def test_every_known_gap_is_a_case() -> None:
    assert {case.name for case in CASES} >= KNOWN_GAPS, KNOWN_GAPS - {case.name for case in CASES}
    assert len(CASES) == 16


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_buildkit_parity(case: Case, builds: dict[str, Future[CaseRun]]) -> None:
    run = builds[case.name].result()
    assert run.identical, f"{case.name}: lamina's image differs from BuildKit's\n{run.report(40)}"

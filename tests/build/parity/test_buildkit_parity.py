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
from pathlib import Path

import pytest

from helpers.parity_case import Case, all_cases, push_bases, run_case
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)

KNOWN_GAPS: set[str] = set()  # every case builds identically now; add a case here only with a reason

CASES = all_cases()


def _param(case: Case) -> object:
    gap = pytest.mark.xfail(strict=True, reason="known gap: lamina's image differs from BuildKit's")
    marks = [gap] if case.name in KNOWN_GAPS else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.fixture(scope="module")
def pushed_bases() -> set[str]:
    """Base repositories already pushed to the session registry."""
    return set()


def test_every_known_gap_is_a_case() -> None:
    assert {case.name for case in CASES} >= KNOWN_GAPS, KNOWN_GAPS - {case.name for case in CASES}
    assert len(CASES) == 16


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_buildkit_parity(case: Case, lamina_registry: RegistryProcess, pushed_bases: set[str], tmp_path: Path) -> None:
    push_bases(case, lamina_registry.host, pushed_bases)
    run = run_case(case, lamina_registry.host, tmp_path)
    assert run.identical, f"{case.name}: lamina's image differs from BuildKit's\n{run.report(40)}"

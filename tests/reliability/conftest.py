"""Fixtures of the reliability suite: ``bench/reliability.py`` importable as ``reliability``, and the
hypothesis profiles: in CI (``CI=true``) examples are derandomized (the same inputs every run, so a
failure reproduces) and no example database is written; elsewhere they are random.
``--hypothesis-profile=lamina-deep`` runs 5,000 examples per test, for a longer hunt."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

from helpers.ciskips import ci_enabled

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("lamina-ci", derandomize=True, max_examples=200, **COMMON)
settings.register_profile("lamina-dev", max_examples=200, **COMMON)
settings.register_profile("lamina-deep", max_examples=5000, **COMMON)  # --hypothesis-profile=lamina-deep
settings.load_profile("lamina-ci" if ci_enabled() else "lamina-dev")

"""Entitlements and the effective RUN modes, before any container runs (pure: no root, no runc)."""

from __future__ import annotations

import pytest

from lamina.build.entitlements import EntitlementError, apply_sandbox, check_build_network, parse_allow
from lamina.build.ops import BuildGraph, MetaStep, RunStep, Scratch, Stage
from lamina.oci import ContainerConfig, Platform


def _graph(*steps: RunStep | MetaStep) -> BuildGraph:
    stage = Stage(0, None, Scratch(), Platform("amd64", "linux"), tuple(steps), ContainerConfig({}))
    return BuildGraph((stage,), 0)


def _run(line: int, **fields: str) -> RunStep:
    return RunStep(argv=("true",), env=(), user="", workdir="/", line=line, **fields)


def test_allow_takes_comma_lists_and_repeats_like_buildx() -> None:
    assert parse_allow(["network.host,security.insecure"]) == {"network.host", "security.insecure"}
    assert parse_allow(["network.host", "network.host", ""]) == {"network.host"}
    assert parse_allow([]) == frozenset()
    with pytest.raises(ValueError, match="unknown entitlement 'device'"):
        parse_allow(["network.host,device"])


def test_the_build_network_fills_in_for_runs_without_their_own() -> None:
    graph = _graph(_run(2), _run(3, network="none"), MetaStep(line=4), _run(5, network="default"))
    for build_mode, expected in (("default", ["default", "none", "default"]), ("none", ["none", "none", "none"])):
        steps = apply_sandbox(graph, build_mode, frozenset(), "Dockerfile").stages[0].steps
        assert [s.network for s in steps if isinstance(s, RunStep)] == expected
    host = apply_sandbox(graph, "host", frozenset({"network.host"}), "Dockerfile").stages[0].steps
    assert [s.network for s in host if isinstance(s, RunStep)] == ["host", "none", "host"]


def test_refusals_name_the_flag_or_the_line() -> None:
    with pytest.raises(EntitlementError, match=r"^--network host needs --allow network.host"):
        check_build_network("host", frozenset({"security.insecure"}))
    with pytest.raises(ValueError, match="--network 'bridge': use one of default, none, host"):
        check_build_network("bridge", frozenset())
    with pytest.raises(EntitlementError, match=r"^app.Dockerfile:7: RUN --network=host needs --allow network.host"):
        apply_sandbox(_graph(_run(7, network="host")), "default", frozenset(), "app.Dockerfile")
    with pytest.raises(EntitlementError, match=r"^Dockerfile:3: RUN --security=insecure needs --allow security.insec"):
        apply_sandbox(_graph(_run(3, security="insecure")), "default", frozenset({"network.host"}), "Dockerfile")
    granted = apply_sandbox(_graph(_run(3, security="insecure")), "none", frozenset({"security.insecure"}), "D")
    (step,) = granted.stages[0].steps
    assert isinstance(step, RunStep) and (step.network, step.security) == ("none", "insecure")

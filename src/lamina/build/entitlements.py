"""Entitlements (buildx's ``--allow``) and the effective sandbox of every RUN step, checked before solving.

BuildKit runs RUN in its own network namespace with its default security profile; leaving either
needs an entitlement the person starting the build grants: ``network.host`` for ``--network host`` or
``RUN --network=host``, ``security.insecure`` for ``RUN --security=insecure``. Without it BuildKit
answers "network.host is not allowed"; we say the same in one line that also names the flag or the
Dockerfile line. The build's ``--network`` is the mode of every RUN without its own ``--network``;
:func:`apply_sandbox` writes that effective mode into each step, so the cache key (which holds
``RunStep.network``) tells a result built without network from one built with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from lamina.build.ops import BuildGraph, RunStep, Stage

__all__ = [
    "ENTITLEMENTS",
    "NETWORK_HOST",
    "NETWORK_MODES",
    "SECURITY_INSECURE",
    "EntitlementError",
    "apply_sandbox",
    "check_build_network",
    "parse_allow",
]

NETWORK_HOST = "network.host"
SECURITY_INSECURE = "security.insecure"
ENTITLEMENTS = (NETWORK_HOST, SECURITY_INSECURE)
NETWORK_MODES = ("default", "none", "host")  # default = the sandbox: own namespace, user-mode network


class EntitlementError(ValueError):
    """A build asks for a mode it was not allowed; the message names the flag or Dockerfile line."""


def parse_allow(values: Iterable[str]) -> frozenset[str]:
    """``--allow`` values as buildx takes them: repeatable, each a comma-separated list."""
    granted = set()
    for value in values:
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            if name not in ENTITLEMENTS:
                raise ValueError(f"--allow: unknown entitlement {name!r}: use {' or '.join(ENTITLEMENTS)}")
            granted.add(name)
    return frozenset(granted)


def check_build_network(network: str, allowed: frozenset[str]) -> None:
    """The build's ``--network``: one of :data:`NETWORK_MODES`; ``host`` needs ``network.host``."""
    if network not in NETWORK_MODES:
        raise ValueError(f"--network {network!r}: use one of {', '.join(NETWORK_MODES)}")
    if network == "host" and NETWORK_HOST not in allowed:
        raise EntitlementError(f"--network host needs --allow {NETWORK_HOST} ({NETWORK_HOST} is not allowed)")


def apply_sandbox(graph: BuildGraph, network: str, allowed: frozenset[str], dockerfile_name: str) -> BuildGraph:
    """``graph`` with every RUN's effective network mode; a mode that needs an entitlement not granted
    is an :class:`EntitlementError` naming the Dockerfile line."""
    check_build_network(network, allowed)
    stages = tuple(_stage(stage, network, allowed, dockerfile_name) for stage in graph.stages)
    return replace(graph, stages=stages)


def _stage(stage: Stage, network: str, allowed: frozenset[str], dockerfile_name: str) -> Stage:
    steps = tuple(
        _run_step(step, network, allowed, dockerfile_name) if isinstance(step, RunStep) else step
        for step in stage.steps
    )
    return replace(stage, steps=steps)


def _run_step(step: RunStep, network: str, allowed: frozenset[str], dockerfile_name: str) -> RunStep:
    where = f"{dockerfile_name}:{step.line}" if step.line else dockerfile_name
    if step.network == "host" and NETWORK_HOST not in allowed:
        raise EntitlementError(
            f"{where}: RUN --network=host needs --allow {NETWORK_HOST} ({NETWORK_HOST} is not allowed)"
        )
    if step.security == "insecure" and SECURITY_INSECURE not in allowed:
        raise EntitlementError(
            f"{where}: RUN --security=insecure needs --allow {SECURITY_INSECURE} ({SECURITY_INSECURE} is not allowed)"
        )
    effective = step.network if step.network != "default" else network
    return step if effective == step.network else replace(step, network=effective)

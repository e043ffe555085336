"""A base-image resolver for convert(): hand-made image configs keyed by reference (plain data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lamina.build.dockerfile import convert
from lamina.build.ops import BuildGraph, Stage
from lamina.oci import ContainerConfig, ImageConfig, Platform

BASES: dict[str, dict[str, Any]] = {
    "busybox": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
    "app:base": {
        "Env": ["PATH=/usr/bin:/bin", "HOME=/home/app"],
        "User": "app",
        "WorkingDir": "/srv",
        "Cmd": ["serve"],
        "Entrypoint": ["/entry"],
        "Labels": {"from": "base"},
    },
    "nopath": {"Env": ["LANG=C"]},
}


class Resolver:
    """Returns BASES[ref] as an ImageConfig and records every call (ref, platform)."""

    def __init__(self, extra: dict[str, dict[str, Any]] | None = None) -> None:
        self.bases = {**BASES, **(extra or {})}
        self.calls: list[tuple[str, Platform]] = []

    def __call__(self, ref: str, platform: Platform) -> ImageConfig:
        self.calls.append((ref, platform))
        if ref not in self.bases:
            raise LookupError(f"{ref}: not found")
        return ImageConfig(config=ContainerConfig(dict(self.bases[ref])))


Build = Callable[..., BuildGraph]


def run(text: str, resolver: Resolver | None = None, **kwargs: Any) -> BuildGraph:
    """convert() for linux/amd64 with the default resolver."""
    kwargs.setdefault("platform", "linux/amd64")
    kwargs.setdefault("build_platform", "linux/amd64")
    return convert(text, resolve_base=resolver or Resolver(), **kwargs)


@pytest.fixture
def build() -> Build:
    return run


def target(graph: BuildGraph) -> Stage:
    return graph.stage(graph.target)


def history(stage: Stage) -> list[str]:
    return [step.created_by for step in stage.steps]

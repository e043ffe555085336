"""buildx/``docker build`` flags lamina does not implement: refused with one line each, never silently taken.

argparse alone would answer an unknown flag with its usage text; these flags are registered (hidden
from ``--help``) so that a CI recipe written for buildx fails with one line naming the flag and what to
do instead. ``--provenance=false`` / ``--sbom=false`` (and ``0``) are accepted: they ask for no
attestation, and lamina writes none; any other value asks for one and is refused.
"""

from __future__ import annotations

import argparse

__all__ = ["add_refused_flags", "check_refused_flags"]

# flag -> (argparse kwargs, why it is refused / what to do)
_REFUSED: dict[str, tuple[dict[str, object], str]] = {
    "--cgroup-parent": ({}, "RUN containers are not placed in a chosen cgroup; remove it"),
    "--security-opt": ({"action": "append"}, "use RUN --security=insecure with --allow security.insecure"),
    "--attest": ({"action": "append"}, "lamina writes no attestations (SBOM, provenance); remove it"),
    "--builder": ({}, "lamina is daemonless: there is no builder instance to choose; remove it"),
    "--call": ({}, "only the build itself is supported (no outline/targets/check calls); remove it"),
    "--check": ({"action": "store_true"}, "lamina runs no build checks (lint rules); remove it"),
    "--squash": ({"action": "store_true"}, "layers are never squashed; remove it"),
}
_NO_ATTESTATION = ("false", "0")
_OPTIONAL = {"--sbom": "SBOM", "--provenance": "provenance"}


def add_refused_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (kwargs, _) in _REFUSED.items():
        parser.add_argument(flag, dest=f"refused_{flag[2:].replace('-', '_')}", help=argparse.SUPPRESS,
                            **kwargs)  # type: ignore[arg-type]
    for flag in _OPTIONAL:
        parser.add_argument(flag, dest=f"refused_{flag[2:]}", help=argparse.SUPPRESS)


def check_refused_flags(args: argparse.Namespace) -> None:
    """Raise ValueError (one line) for the first refused flag given."""
    for flag, (_, why) in _REFUSED.items():
        value = getattr(args, f"refused_{flag[2:].replace('-', '_')}", None)
        if value:
            raise ValueError(f"{flag} is not supported by lamina: {why}")
    for flag, what in _OPTIONAL.items():
        value = getattr(args, f"refused_{flag[2:]}", None)
        if value is not None and value.strip().lower() not in _NO_ATTESTATION:
            raise ValueError(
                f"{flag}={value} is not supported by lamina: it writes no {what} attestation "
                f"({flag}=false is accepted)"
            )

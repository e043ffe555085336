"""buildx/``docker build`` flags lamina does not implement: refused with one line each, never silently taken.

argparse alone would answer an unknown flag with its usage text; these flags are registered (hidden
from ``--help``) so that a CI recipe written for buildx (or for the legacy ``docker build``, whose
resource and isolation flags buildx still accepts and ignores) fails with one line naming the flag and
what to do instead, exit status 2 (:class:`RefusedFlag`).

Accepted because they ask for what lamina does anyway: ``--provenance=false`` / ``--sbom=false`` (and
``0``: lamina writes no attestation; any other value asks for one and is refused), ``--call=build``
(buildx's default method, the build itself), ``--rm`` and ``--force-rm`` (a RUN container is removed
after it ran, failed or not; ``--rm=false`` is refused by argparse).
"""

from __future__ import annotations

import argparse

__all__ = ["ALWAYS", "RefusedFlag", "add_refused_flags", "check_refused_flags"]

# flag -> (argparse kwargs, why it is refused / what to do)
_REFUSED: dict[str, tuple[dict[str, object], str]] = {
    "--cgroup-parent": ({}, "RUN containers are not placed in a chosen cgroup; remove it"),
    "--security-opt": ({"action": "append"}, "use RUN --security=insecure with --allow security.insecure"),
    "--attest": ({"action": "append"}, "lamina writes no attestations (SBOM, provenance); remove it"),
    "--builder": ({}, "lamina is daemonless: there is no builder instance to choose; remove it"),
    "--call": ({}, "only the build itself is supported (--call=build; no outline/targets/check calls)"),
    "--check": ({"action": "store_true"}, "lamina runs no build checks (lint rules); remove it"),
    "--squash": ({"action": "store_true"}, "layers are never squashed; remove it"),
    "--policy": ({"action": "append"}, "it evaluates no build policies (Rego); remove it"),
    # the legacy builder's flags (buildx takes them and does nothing with them)
    "--compress": ({"action": "store_true"}, "the context is read in place, never sent to a daemon; remove it"),
    "--isolation": ({}, "only Linux containers are built (runc/crun); remove it"),
    "--memory": ({}, "RUN containers get no memory limit of their own; remove it"),
    "--memory-swap": ({}, "RUN containers get no memory limit of their own; remove it"),
    "--cpu-shares": ({}, "RUN containers get no CPU limits; remove it"),
    "--cpu-period": ({}, "RUN containers get no CPU limits; remove it"),
    "--cpu-quota": ({}, "RUN containers get no CPU limits; remove it"),
    "--cpuset-cpus": ({}, "RUN containers get no CPU limits; remove it"),
    "--cpuset-mems": ({}, "RUN containers get no CPU limits; remove it"),
    "--disable-content-trust": ({"action": "store_true"}, "lamina verifies no image signatures; remove it"),
}
# flags that ask for what lamina always does: accepted, nothing to change
ALWAYS = {
    "--rm": "a RUN container is removed once it has run",
    "--force-rm": "a RUN container is removed even when its command failed",
}


class RefusedFlag(ValueError):
    """A flag (or a file buildx would read, such as Dockerfile.rego) lamina does not implement; the message is one
    line naming it."""


_NO_ATTESTATION = ("false", "0")
_OPTIONAL = {"--sbom": "SBOM", "--provenance": "provenance"}


def add_refused_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (kwargs, _) in _REFUSED.items():
        parser.add_argument(flag, dest=f"refused_{flag[2:].replace('-', '_')}", help=argparse.SUPPRESS,
                            **kwargs)  # type: ignore[arg-type]
    for flag in _OPTIONAL:
        parser.add_argument(flag, dest=f"refused_{flag[2:]}", help=argparse.SUPPRESS)
    for flag in ALWAYS:
        parser.add_argument(flag, dest=f"always_{flag[2:].replace('-', '_')}", action="store_true",
                            help=argparse.SUPPRESS)


def check_refused_flags(args: argparse.Namespace) -> None:
    """Raise :class:`RefusedFlag` (one line) for the first refused flag given."""
    for flag, (_, why) in _REFUSED.items():
        value = getattr(args, f"refused_{flag[2:].replace('-', '_')}", None)
        if flag == "--call" and isinstance(value, str) and value.strip().lower() == "build":
            continue  # buildx's default method: the build itself
        if value:
            raise RefusedFlag(f"{flag} is not supported by lamina: {why}")
    for flag, what in _OPTIONAL.items():
        value = getattr(args, f"refused_{flag[2:]}", None)
        if value is not None and value.strip().lower() not in _NO_ATTESTATION:
            raise RefusedFlag(
                f"{flag}={value} is not supported by lamina: it writes no {what} attestation "
                f"({flag}=false is accepted)"
            )

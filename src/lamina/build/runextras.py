"""``--add-host``, ``--ulimit`` and ``--shm-size``: build-wide settings of every RUN container, as buildx
passes them to BuildKit (the ``add-hosts``, ``ulimit`` and ``shm-size`` frontend options).

- ``--add-host HOST:IP`` / ``HOST=IP`` (repeatable, or comma-separated as buildx's string slice): an
  ``IP<TAB>HOST`` line after the container's hosts file, in flag order, as BuildKit's hosts file writer
  does; an IPv6 address may be bracketed (``host=[::1]``). ``host-gateway`` needs Docker's daemon: refused.
- ``--ulimit NAME=SOFT[:HARD]`` (Docker's names: ``nofile``, ``nproc``, ``core``, ``stack``, ...; ``-1`` is
  unlimited; HARD defaults to SOFT): that rlimit of the container, replacing lamina's default of the
  same name. A value above this process's own hard limit cannot be granted and is refused.
- ``--shm-size SIZE`` (``64m``, ``1g``, bytes; binary units, as Docker's RAMInBytes): the size of the
  container's ``/dev/shm`` (default 64 MiB).
- ``--build-arg BUILDKIT_SANDBOX_HOSTNAME=NAME``: the container's hostname, also in its hosts file
  (default ``buildkitsandbox``), as BuildKit's ExecOp hostname.

BuildKit keeps all of them in each ExecOp's meta, so they are part of every RUN's cache key; lamina puts
them on each :class:`~lamina.build.ops.RunStep` (``extras``) before solving, for the same effect.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from lamina.build.ops import BuildGraph, RunExtras, RunStep

__all__ = ["apply_run_extras", "parse_add_hosts", "parse_run_extras", "parse_shm_size", "parse_ulimits"]

_ULIMITS = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK",
}
_UNLIMITED = (1 << 64) - 1  # RLIM_INFINITY as the OCI runtime spec writes it
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_add_hosts(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    import ipaddress  # only a build with --add-host pays for it

    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            host, sep, ip = item.partition("=")
            if not sep:
                host, sep, ip = item.partition(":")
            if not sep or not host or not ip:
                raise ValueError(f"invalid --add-host {item!r}: expected HOST:IP or HOST=IP")
            if ip == "host-gateway":
                raise ValueError(f"--add-host {item}: host-gateway is Docker's daemon gateway, which lamina has none "
                                 "of; give the IP address")
            if not _HOSTNAME.match(host):
                raise ValueError(f"invalid --add-host {item!r}: {host!r} is not a host name")
            try:
                address = ipaddress.ip_address(ip.removeprefix("[").removesuffix("]"))
            except ValueError:
                raise ValueError(f"invalid --add-host {item!r}: {ip!r} is not an IP address") from None
            out.append((host, str(address)))
    return tuple(out)


def _limit(text: str, item: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"invalid --ulimit {item!r}: {text!r} is not a number") from None
    if value < -1:
        raise ValueError(f"invalid --ulimit {item!r}: {value} is negative (-1 is unlimited)")
    return _UNLIMITED if value == -1 else value


def parse_ulimits(values: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
    import resource  # only a build with --ulimit pays for it

    found: dict[str, tuple[str, int, int]] = {}
    for item in values:
        name, sep, limits = item.partition("=")
        rlimit = _ULIMITS.get(name.strip().lower())
        if not sep or rlimit is None:
            raise ValueError(f"invalid --ulimit {item!r}: expected NAME=SOFT[:HARD] with NAME one of "
                             f"{', '.join(sorted(_ULIMITS))}")
        soft_text, _, hard_text = limits.partition(":")
        soft = _limit(soft_text, item)
        hard = _limit(hard_text, item) if hard_text else soft
        if soft > hard:
            raise ValueError(f"invalid --ulimit {item!r}: soft limit {soft_text} is above the hard limit {hard_text}")
        own_hard = resource.getrlimit(getattr(resource, rlimit))[1]
        if own_hard != resource.RLIM_INFINITY and hard > own_hard:
            raise ValueError(f"--ulimit {item}: above this process's own hard limit ({own_hard}), which a "
                             "container cannot exceed")
        found[rlimit] = (rlimit, soft, hard)  # a later flag for the same limit wins, as Docker's map does
    return tuple(found.values())


def parse_shm_size(value: str | None) -> int | None:
    if value is None:
        return None
    match = _SIZE.match(value.strip())
    if match is None:
        raise ValueError(f"invalid --shm-size {value!r}: expected a size such as 64m, 1g or 1048576")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"invalid --shm-size {value!r}: must be greater than 0")
    return size


def parse_run_extras(
    add_hosts: Sequence[str], ulimits: Sequence[str], shm_size: str | None, hostname: str | None = None
) -> RunExtras:
    if hostname is not None and (len(hostname) > 64 or not _HOSTNAME.match(hostname)):
        raise ValueError(f"invalid --build-arg BUILDKIT_SANDBOX_HOSTNAME={hostname!r}: expected a host name "
                         "(letters, digits, '-', '.', '_'; at most 64 characters)")
    return RunExtras(parse_add_hosts(add_hosts) if add_hosts else (), parse_ulimits(ulimits) if ulimits else (),
                     parse_shm_size(shm_size), hostname)


def apply_run_extras(graph: BuildGraph, extras: RunExtras) -> BuildGraph:
    """Every RUN of ``graph`` with ``extras`` (so they reach its cache key and its container)."""
    if extras == RunExtras():
        return graph
    stages = tuple(
        dataclasses.replace(stage, steps=tuple(
            dataclasses.replace(step, extras=extras) if isinstance(step, RunStep) else step for step in stage.steps
        ))
        for stage in graph.stages
    )
    return dataclasses.replace(graph, stages=stages)

"""The registries a benchmark measures: lamina and CNCF distribution started on free loopback ports,
and the CPU time a server's process group has used (to tell server cost from client cost on 2 cores).

Starting and readiness-polling live in ``tests/helpers/registries.py`` (one implementation for the
tests and the benchmarks); this module only puts it on the path and adds what benchmarks need.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.registries import RegistryProcess, start_distribution, start_lamina

__all__ = ["CLOCK_TICKS", "RegistryProcess", "group_cpu_seconds", "start_distribution", "start_lamina"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (Linux /proc).

    The servers run in their own session (``start_new_session``), so the group is the server and any
    worker processes it forked. Time of workers that already exited is not counted.
    """
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields after "pid (comm) "
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / CLOCK_TICKS

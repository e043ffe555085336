"""Results of bench/registry.py and how they are shown: a rich table, or JSON with ``--json``.

The ratio column is first registry / second (lamina / distribution when the script starts both);
server CPU ms/op is the CPU the server's process group used per operation, which stays meaningful
when other load on the machine slows every registry's wall-clock figures down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Result", "lamina_commit", "report"]


@dataclass
class Result:
    figure: str
    clients: int
    unit: str
    value: float
    operations: int
    seconds: float
    server_cpu_seconds: float | None
    client_cpu_seconds: float
    digests: list[str] = field(default_factory=list, repr=False)


def lamina_commit() -> str:
    """The commit of the lamina tree this script belongs to (``+dirty`` with uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def report(everything: dict[str, list[Result]], as_json: bool, args: argparse.Namespace) -> None:
    labels = list(everything)
    rows = []
    for i, first in enumerate(everything[labels[0]]):
        row: dict[str, Any] = {"figure": first.figure, "clients": first.clients, "unit": first.unit}
        for label in labels:
            r = everything[label][i]
            row[label] = {k: v for k, v in asdict(r).items() if k not in ("figure", "clients", "unit", "digests")}
            cpu = r.server_cpu_seconds
            row[label]["server_cpu_ms_per_op"] = None if cpu is None else 1000 * cpu / max(1, r.operations)
        if len(labels) >= 2 and everything[labels[1]][i].value > 0:
            row["ratio"] = first.value / everything[labels[1]][i].value
        rows.append(row)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "quick": args.quick, "repeat": args.repeat, "client_procs": args.client_procs,
            "lamina_workers": args.lamina_workers, "registries": labels, "loadavg_at_end": os.getloadavg(),
            "lamina_commit": lamina_commit()}  # fmt: skip
    if as_json:
        print(json.dumps({"meta": meta, "results": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    load = ", ".join(f"{x:.1f}" for x in meta["loadavg_at_end"])
    title = f"registry benchmark ({meta['date']}, {meta['cpus']} CPUs, load {load}, lamina {meta['lamina_commit']})"
    table = Table(title=title)
    for column in [
        "figure",
        "clients",
        *labels,
        *(["ratio"] if len(labels) >= 2 else []),
        "server CPU ms/op",
        "client CPU s",
    ]:
        table.add_column(column, justify="left" if column == "figure" else "right")
    for row in rows:
        ratio = row.get("ratio")
        cells = [row["figure"], str(row["clients"])]
        cells += [f"{row[label]['value']:.1f} {row['unit']}" for label in labels]
        if len(labels) >= 2:
            cells.append("-" if ratio is None else f"[{'green' if ratio >= 1 else 'red'}]{ratio:.2f}[/]")
        per_op = [row[lb]["server_cpu_ms_per_op"] for lb in labels]
        cells.append(" / ".join("-" if x is None else f"{x:.2f}" for x in per_op))
        cells.append(" / ".join(f"{row[lb]['client_cpu_seconds']:.1f}" for lb in labels))
        table.add_row(*cells)
    Console(width=max(150, shutil.get_terminal_size().columns)).print(table)

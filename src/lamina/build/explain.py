"""``lamina build --explain-cache``: one table row per step — CACHED and from where, or MISS and why.

The same facts as the ``CACHED (where)`` / ``MISS reason`` progress lines, gathered at the end so a CI
log answers "why was this step not cached?" in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.build.solver import StepReport

__all__ = ["explain_table"]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def explain_table(steps: Sequence[StepReport], *, width: int = 60) -> str:
    rows = [("STEP", "CACHE", "WHERE / WHY")]
    for step in sorted(steps, key=lambda s: s.vertex):
        if step.cached:
            rows.append((_cut(step.name, width), "CACHED", step.origin or "local"))
        else:
            rows.append((_cut(step.name, width), "MISS", step.reason or "executed"))
    first = max(len(row[0]) for row in rows)
    hits = sum(1 for s in steps if s.cached)
    lines = [f"{a:<{first}}  {b:<6}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"{hits}/{len(steps)} steps cached")
    return "\n".join(lines)

"""Where the worker processes keep their metrics, and when dead workers' share is cleaned.

``lamina registry serve`` runs N worker processes and a scrape of ``/metrics`` lands on any one of them,
so each worker records its counters and histograms in memory-mapped files that every worker reads:
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, one ``<type>_<pid>.db`` file per
worker and metric type). The directory is ``ROOT/run/metrics``, one per registry root. prometheus_client
picks its value store when it is first imported, so :func:`prepare_metrics_directory` must run before
that, in the server's first process, before any worker starts; this module therefore never imports it
at module level.

Cleaning (prometheus_client's rules): a dead worker's counters and histograms stay in the sum, so totals
never go down while the server runs; its per-process gauges (``livesum``) are removed with
``mark_process_dead`` when the supervisor sees it exit (:func:`worker_exited`), when a scrape finds its
process gone (a worker killed with SIGKILL), and with everything else at the next start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "metrics_directory", "prepare_metrics_directory", "worker_exited"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory(root: Path) -> Path:
    return root.absolute() / "run" / "metrics"


def prepare_metrics_directory(root: Path) -> Path:
    """Empty ``ROOT/run/metrics`` (a previous run's workers' files) and put this process and the workers
    it forks into prometheus_client's multiprocess mode over it. Call before prometheus_client is imported."""
    directory = metrics_directory(root)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def worker_exited(pid: int) -> None:
    """Drop the per-process gauges of worker ``pid``, which has exited (its counters stay in the sums)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory is None:
        return
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, directory)

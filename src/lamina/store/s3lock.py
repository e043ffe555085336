"""What an S3 upload session's ``lock`` object says, and when another request may take it over.

The lock (created with ``If-None-Match: *`` by :class:`lamina.store.s3uploads.S3UploadStore`) names its
holder: a random token, the time of its last refresh, and the process: pid, its start time, and the
machine's boot id with the pid namespace (what makes a pid mean the same process to another reader).
A lock may be taken over when it was not refreshed for ``stale_seconds`` (its holder died anywhere, or
lost S3), or at once when its holder ran under the same boot and pid namespace and that process no
longer exists: a worker killed by SIGKILL, or OOM, frees its sessions for the next request on the same
host (the usual ``workers = N`` deployment) without the client waiting out the lease.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

__all__ = ["lock_body", "may_take_over"]


@functools.cache
def _host() -> str:
    """This boot of this machine, and this pid namespace ("" when /proc does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None when no
    such process runs (a zombie counts as gone: it will never release anything)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def lock_body(token: str) -> bytes:
    """The lock object's content for a holder with ``token``, refreshed now."""
    pid = os.getpid()
    return json.dumps(
        {"owner": token, "at": time.time(), "host": _host(), "pid": pid, "started": _started(pid)}
    ).encode()


def may_take_over(body: bytes, stale_seconds: float) -> bool:
    """Whether the lock ``body`` belongs to nobody any more: unreadable, unrefreshed for ``stale_seconds``,
    or held by a process of this host and pid namespace that is gone (or a new one with its pid)."""
    try:
        held: dict[str, Any] = json.loads(body)
        at = float(held["at"])
    except (ValueError, KeyError, TypeError):
        return True
    if at < time.time() - stale_seconds:
        return True
    host = _host()
    if host and held.get("host") == host and isinstance(held.get("pid"), int):
        return _started(held["pid"]) != held.get("started")
    return False

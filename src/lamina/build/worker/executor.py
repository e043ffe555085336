"""Run a RUN step's process in a real container through an OCI runtime (runc by default, or crun).

The bundle is ``state_dir/bundles/<id>/config.json`` from :func:`runtime_config` with an absolute root
path (the snapshot's merged mount), run with ``runc --root state_dir/<runtime> run --bundle B ID`` and
no terminal. Output is streamed line by line to a callback (the progress display) while the last
lines are kept for the error message; the container and its bundle are always deleted, also when
the caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .runtime_spec import RunSpec, runtime_config

__all__ = ["Executor", "OutputCallback", "RunFailed", "RuncExecutor"]

OutputCallback = Callable[[str, str], None]
"""Called with ("stdout" | "stderr", one line of output without its newline)."""

_READ = 1 << 16
_LAST_LINES = 12


class RunFailed(Exception):
    """The process exited non-zero; ``last_lines`` are the tail of its combined output."""

    def __init__(self, exit_code: int, last_lines: tuple[str, ...], argv: tuple[str, ...] = ()) -> None:
        super().__init__(exit_code, last_lines)
        self.exit_code = exit_code
        self.last_lines = last_lines
        self.argv = argv

    def __str__(self) -> str:
        command = " ".join(self.argv) if self.argv else "process"
        return f"{command!r} did not complete successfully: exit code: {self.exit_code}"


class Executor(Protocol):
    """The one role the solver needs: run a process on a mounted rootfs, report its exit code."""

    async def run(
        self, spec: RunSpec, rootfs: Path, on_output: OutputCallback | None = None, *, check: bool = True
    ) -> int: ...


class RuncExecutor:
    def __init__(self, state_dir: str | os.PathLike[str], runtime: str = "runc") -> None:
        binary = shutil.which(runtime)
        if binary is None:
            raise FileNotFoundError(
                f"OCI runtime {runtime!r} not found in PATH: install it (Debian package {runtime!r})"
            )
        self.runtime = runtime
        self.binary = binary
        self.state_dir = Path(state_dir)
        self._runtime_root = self.state_dir / runtime
        self._bundles = self.state_dir / "bundles"

    async def run(
        self, spec: RunSpec, rootfs: Path, on_output: OutputCallback | None = None, *, check: bool = True
    ) -> int:
        """Run ``spec`` with ``rootfs`` as /; return the exit code, or raise :class:`RunFailed` when ``check``."""
        container_id = f"lamina-{os.urandom(8).hex()}"
        bundle = self._bundles / container_id
        bundle.mkdir(parents=True)
        self._runtime_root.mkdir(parents=True, exist_ok=True)
        config = runtime_config(spec, Path(rootfs).resolve())
        (bundle / "config.json").write_text(json.dumps(config), encoding="utf-8")
        last = _Tail()
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                "--root",
                str(self._runtime_root),
                "run",
                "--bundle",
                str(bundle),
                container_id,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None and proc.stderr is not None
                await asyncio.gather(
                    _pump(proc.stdout, "stdout", on_output, last),
                    _pump(proc.stderr, "stderr", on_output, last),
                )
                code = await proc.wait()
            except BaseException:
                await self._kill(container_id)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        finally:
            await self._delete(container_id)
            shutil.rmtree(bundle, ignore_errors=True)
        if check and code != 0:
            raise RunFailed(code, last.lines(), spec.argv)
        return code

    async def _runtime(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--root",
            str(self._runtime_root),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await proc.wait()

    async def _kill(self, container_id: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self._runtime("kill", container_id, "KILL"))

    async def _delete(self, container_id: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self._runtime("delete", "--force", container_id))


class _Tail:
    """The last lines of the output in arrival order, always including the last lines of stderr
    (the two pipes are read independently, so a burst of stdout must not push the error out)."""

    def __init__(self) -> None:
        self._seq = 0
        self._all: deque[tuple[int, str]] = deque(maxlen=_LAST_LINES)
        self._errors: deque[tuple[int, str]] = deque(maxlen=_LAST_LINES // 2)

    def add(self, name: str, line: str) -> None:
        self._seq += 1
        self._all.append((self._seq, line))
        if name == "stderr":
            self._errors.append((self._seq, line))

    def lines(self) -> tuple[str, ...]:
        return tuple(line for _, line in sorted(set(self._all) | set(self._errors)))


async def _pump(stream: asyncio.StreamReader, name: str, on_output: OutputCallback | None, last: _Tail) -> None:
    pending = b""
    while True:
        chunk = await stream.read(_READ)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            _emit(raw, name, on_output, last)
    if pending:
        _emit(pending, name, on_output, last)


def _emit(raw: bytes, name: str, on_output: OutputCallback | None, last: _Tail) -> None:
    line = raw.decode("utf-8", "replace").rstrip("\r")
    last.add(name, line)
    if on_output is not None:
        on_output(name, line)

"""Run a RUN step's process in a real container through an OCI runtime (runc by default, or crun).

The bundle is ``state_dir/bundles/<id>/config.json`` from :func:`runtime_config` with an absolute root
path (the snapshot's merged mount), run with ``runc --root state_dir/<runtime> run --bundle B ID`` and
no terminal. Output is streamed line by line to a callback (the progress display) while the last
lines are kept for the error message; the container and its bundle are always deleted, also when
the caller is cancelled.

The network is prepared here, because only the worker knows it: ``network="sandbox"`` gets a fresh
namespace served by slirp4netns (:mod:`.usernet`) for this one run, torn down afterwards (or, with a
:class:`~.usernet.NetworkPool`, prepared during the previous run and torn down in the background), with a
resolv.conf naming slirp4netns's DNS; ``"sandbox"`` and ``"none"`` get BuildKit's hosts file
(localhost and ``buildkitsandbox``); ``"host"`` keeps the host's files. ``--add-host`` lines go after the
hosts file of every mode, in a copy named by its content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from .runtime_spec import RunSpec, runtime_config
from .security_host import prepare_security
from .usernet import (
    HOSTS_FILE,
    NetworkPool,
    cleanup_stale_namespaces,
    hosts_file_text,
    resolv_conf_text,
    sandbox_network,
)

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
    """RUN steps in runc (or crun). With a :class:`NetworkPool` (a build's executor), sandbox networks are
    prepared ahead and torn down in the background; without one, each run opens and closes its own."""

    def __init__(
        self, state_dir: str | os.PathLike[str], runtime: str = "runc", *, networks: NetworkPool | None = None
    ) -> None:
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
        self._network_files: tuple[str, str] | None = None  # (hosts, resolv.conf) for own-namespace runs
        self._swept = False
        self.networks = networks

    async def run(
        self,
        spec: RunSpec,
        rootfs: Path,
        on_output: OutputCallback | None = None,
        *,
        check: bool = True,
        private: bool = False,
    ) -> int:
        """Run ``spec`` with ``rootfs`` as /; return the exit code, or raise :class:`RunFailed` when ``check``.

        ``private``: the spec holds secrets (a ``RUN --mount=type=secret,env=``): its bundle is written to
        a 0700 directory in /dev/shm instead of the state directory, and removed with the container."""
        spec = prepare_security(spec)  # the seccomp filter (loaded once per process) or insecure's devices
        async with self._network(spec) as networked:
            return await self._run(networked, rootfs, on_output, check=check, private=private)

    @contextlib.asynccontextmanager
    async def _network(self, spec: RunSpec) -> AsyncIterator[RunSpec]:
        """``spec`` with its network prepared: a sandbox namespace for this run, or the generated files."""
        if spec.network == "host":
            yield replace(spec, hosts_file=self._extra_hosts_file(spec, host=True)) if spec.extra_hosts else spec
            return
        hosts, resolv = self._files()
        if spec.extra_hosts or spec.hostname != "buildkitsandbox":
            hosts = self._extra_hosts_file(spec, host=False)
        if spec.network == "none":
            yield replace(spec, hosts_file=hosts)
            return
        if not self._swept:  # once per executor: namespaces left behind by builds that were killed
            self._swept = True
            await cleanup_stale_namespaces()
        if self.networks is None:
            async with sandbox_network(self.state_dir / "network") as net:
                yield replace(spec, netns_path=net.path, hosts_file=hosts, resolv_conf=resolv)
            return
        net = await self.networks.take()
        try:
            yield replace(spec, netns_path=net.path, hosts_file=hosts, resolv_conf=resolv)
        finally:
            self.networks.retire(net)

    def _extra_hosts_file(self, spec: RunSpec, *, host: bool) -> str:
        """The hosts file (naming the spec's hostname) plus ``--add-host`` lines (``IP<TAB>HOST``, BuildKit's
        form), named by its content so builds sharing the state directory with other values never overwrite
        each other's."""
        base = hosts_file_text(spec.hostname)
        if host:  # the host's own file, as the host network's runs see it without --add-host
            base = Path("/etc/hosts").read_text(encoding="utf-8", errors="replace") if Path("/etc/hosts").is_file() \
                else ""
            base += "" if not base or base.endswith("\n") else "\n"
        text = base + "".join(f"{ip}\t{name}\n" for name, ip in spec.extra_hosts)
        directory = self.state_dir / "network"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"hosts-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        if not path.is_file():
            _replace_file(path, text)
        return str(path)

    def _files(self) -> tuple[str, str]:
        """The hosts file and resolv.conf of own-namespace runs, written once per executor."""
        if self._network_files is None:
            directory = self.state_dir / "network"
            directory.mkdir(parents=True, exist_ok=True)
            try:
                host_resolv = Path("/etc/resolv.conf").read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                host_resolv = ""
            hosts, resolv = directory / "hosts", directory / "resolv.conf"
            _replace_file(hosts, HOSTS_FILE)
            _replace_file(resolv, resolv_conf_text(host_resolv))
            self._network_files = (str(hosts), str(resolv))
        return self._network_files

    async def _run(
        self, spec: RunSpec, rootfs: Path, on_output: OutputCallback | None, *, check: bool, private: bool = False
    ) -> int:
        container_id = f"lamina-{os.urandom(8).hex()}"
        if private:
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
            bundle = Path(tempfile.mkdtemp(prefix="lamina-bundle-", dir=shm)) / container_id
        else:
            bundle = self._bundles / container_id
        bundle.mkdir(parents=True)
        self._runtime_root.mkdir(parents=True, exist_ok=True)
        # The container's own cgroup, named like it (so never shared), under runc's cgroup; runc delete removes it.
        config = runtime_config(spec, Path(rootfs).resolve(), cgroups_path=container_id)
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
            shutil.rmtree(bundle.parent if private else bundle, ignore_errors=True)
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


def _replace_file(path: Path, text: str) -> None:
    """Write ``path`` whole by rename: a build sharing the state dir never binds a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    partial.write_text(text, encoding="utf-8")
    partial.chmod(0o644)
    os.replace(partial, path)


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

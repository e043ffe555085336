"""Real registry servers on free loopback ports, for tests and benchmarks.

Both peers run as subprocesses: lamina's own (``python -m lamina.cli registry serve``) and CNCF
distribution (Debian's ``docker-registry``). A server counts as started only once ``GET /v2/``
answers; if it dies or never answers, the error carries its stderr so a failing fixture explains
itself. Stdlib only, so ``bench/`` can use it without the test dependencies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DISTRIBUTION_BINARY",
    "RegistryProcess",
    "ServerStartError",
    "free_port",
    "start_distribution",
    "start_lamina",
]

DISTRIBUTION_BINARY = "/usr/bin/docker-registry"
READY_TIMEOUT = 30.0


class ServerStartError(RuntimeError):
    """A registry process exited or never answered ``GET /v2/``; the message holds its stderr."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RegistryProcess:
    """One running registry: ``url`` is ``http://127.0.0.1:PORT``, ``host`` is ``127.0.0.1:PORT``.

    ``stop()`` and ``restart()`` keep ``root`` (the storage), so tests can check what survives a restart.
    """

    name: str
    argv: list[str]
    port: int
    root: Path
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_text(self, limit: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def start(self, timeout: float = READY_TIMEOUT) -> RegistryProcess:
        if self.running:
            return self
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except ServerStartError:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {code} before answering GET /v2/ on {self.host}:\n"
                    f"{self.stderr_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # an auth-enabled registry is up; the caller handles auth
                    return
                last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.05)
        raise ServerStartError(
            f"{self.name} did not answer GET /v2/ on {self.host} within {timeout:.0f}s ({last_error}):\n"
            f"{self.stderr_text()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if it lingers; the root stays."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def restart(self, timeout: float = READY_TIMEOUT) -> RegistryProcess:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> RegistryProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _start_on_free_port(make: Callable[[int], RegistryProcess], attempts: int = 3) -> RegistryProcess:
    """Start ``make(port)`` on a free port; another port if someone took this one in between."""
    for attempt in range(attempts):
        try:
            return make(free_port()).start()
        except ServerStartError as exc:
            if "in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_lamina(
    workdir: Path,
    *,
    config: str | None = None,
    config_suffix: str = ".toml",
    workers: int | None = None,
    python: str = sys.executable,
) -> RegistryProcess:
    """Start ``lamina registry serve`` with its root under ``workdir``; ``config`` is the file's text."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "root"
    extra: list[str] = []
    if workers is not None:
        extra += ["--workers", str(workers)]
    if config is not None:
        config_path = workdir / f"config{config_suffix}"
        config_path.write_text(config)
        extra += ["--config", str(config_path)]
    env = dict(os.environ)
    env.pop("LAMINA_REGISTRY_ROOT", None)

    def make(port: int) -> RegistryProcess:
        argv = [python, "-m", "lamina.cli", "registry", "serve", "--listen", f"127.0.0.1:{port}", "--root", str(root)]
        return RegistryProcess("lamina registry", [*argv, *extra], port, root, workdir / "server.log", env=env)

    return _start_on_free_port(make)


def distribution_config(root: Path, port: int, auth: dict[str, Any] | None = None) -> str:
    """CNCF distribution 2.8: filesystem storage, delete enabled, Debian's default in-memory blob cache;
    ``auth`` (e.g. ``{"htpasswd": {...}}`` or ``{"token": {...}}``) becomes the ``auth:`` section."""
    auth_section = f"auth: {json.dumps(auth)}\n" if auth else ""  # a JSON value is YAML flow style
    return (
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {root}\n"
        "  delete:\n    enabled: true\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        "  redirect:\n    disable: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"{auth_section}"
    )


def start_distribution(
    workdir: Path, binary: str = DISTRIBUTION_BINARY, auth: dict[str, Any] | None = None
) -> RegistryProcess:
    """Start CNCF distribution (``docker-registry serve CONFIG``) with storage under ``workdir``;
    ``auth`` is its ``auth:`` config section (none: anonymous push and pull)."""
    if not shutil.which(binary):
        raise FileNotFoundError(f"{binary} not found: run scripts/install-system-deps.sh (package docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    config_path = workdir / "config.yml"

    def make(port: int) -> RegistryProcess:
        config_path.write_text(distribution_config(root, port, auth))
        return RegistryProcess(
            "docker-registry", [binary, "serve", str(config_path)], port, root, workdir / "server.log"
        )

    return _start_on_free_port(make)

"""``--secret`` and ``--ssh``: what a build may hand to ``RUN --mount=type=secret|ssh``, provided per build.

``--secret`` takes buildx's forms (``parseSecret``): ``id=ID,src=FILE`` (``source=``), ``id=ID,env=VAR``,
``type=file|env`` (``type=env,src=VAR`` names the variable), and a bare ``id=ID``, which reads the
environment variable ``ID`` if it is set and else the file ``ID`` (BuildKit's secretsprovider). Values are
read when a RUN that mounts them executes — never at parse time, never for a cached step — and are held
only in memory: a :class:`SecretSpec` names where a secret is, never what it is, so a request, a key, a log
line or the state directory cannot carry it.

``--ssh`` takes ``ID[=PATH[,PATH...]]`` (``default`` is the usual ID): no path means ``$SSH_AUTH_SOCK``; a
path that is a socket is an agent to forward to; other paths are private key files, loaded into a private
``ssh-agent`` (started at the first RUN that needs it, stopped with the build) through ``ssh-add -`` on
stdin, as buildx loads them into an in-process keyring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BuildSecrets",
    "SecretError",
    "SecretSpec",
    "SshAgents",
    "SshSpec",
    "parse_secret",
    "parse_ssh",
    "private_dir",
]


class SecretError(Exception):
    """A --secret/--ssh value is malformed or cannot be read; the message names it, never its content."""


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """One ``--secret``: its id and where its value is (a file or an environment variable)."""

    id: str
    file: str | None = None
    env: str | None = None


@dataclass(frozen=True, slots=True)
class SshSpec:
    """One ``--ssh``: its id and an agent socket or key files (none: ``$SSH_AUTH_SOCK``)."""

    id: str
    paths: tuple[str, ...] = ()


def parse_secret(text: str) -> SecretSpec:
    """One ``--secret`` value (buildx's parseSecret)."""
    kind = ""
    fields: dict[str, str] = {}
    for field in text.split(","):
        key, has_value, value = field.partition("=")
        key = key.strip().lower()
        if not has_value:
            raise SecretError(f"--secret {text}: invalid field '{field}' must be a key=value pair")
        if key == "type":
            if value not in ("file", "env"):
                raise SecretError(f"--secret {text}: unsupported secret type {value!r} (file, env)")
            kind = value
        elif key in ("id", "env"):
            fields[key] = value
        elif key in ("source", "src"):
            fields["src"] = value
        else:
            raise SecretError(f"--secret {text}: unexpected key '{key}' in '{field}' (id, src, env, type)")
    secret_id = fields.get("id", "")
    if not secret_id:
        raise SecretError(f"--secret {text}: the secret needs an id (id=NAME)")
    if secret_id.startswith(("HTTP_AUTH_TOKEN_", "HTTP_AUTH_HEADER_")):  # BuildKit: credentials of ADD <url>
        raise SecretError(f"--secret {text}: lamina's ADD sends no credentials to a URL (BuildKit's "
                          "HTTP_AUTH_TOKEN_<host>/HTTP_AUTH_HEADER_<host> secrets); download it in a RUN with "
                          "--mount=type=secret under another id instead")
    env, src = fields.get("env"), fields.get("src")
    if kind == "env" and not env:
        env, src = src or secret_id, None
    if kind == "file" and not src and not env:
        src = secret_id
    if env and src:
        raise SecretError(f"--secret {text}: give either src=FILE or env=VAR, not both")
    return SecretSpec(secret_id, file=src, env=env)


def parse_ssh(text: str) -> SshSpec:
    """One ``--ssh`` value: ``default``, ``ID``, ``ID=SOCKET`` or ``ID=KEY[,KEY...]``."""
    secret_id, _, rest = text.partition("=")
    if not secret_id or "," in secret_id:
        raise SecretError(f"--ssh {text}: expected ID[=SOCKET|KEY[,KEY...]], e.g. default or default=$SSH_AUTH_SOCK")
    return SshSpec(secret_id, tuple(p for p in rest.split(",") if p) if rest else ())


def private_dir(prefix: str) -> Path:
    """A 0700 directory for one RUN's secret files and sockets: in /dev/shm (memory, outside the state
    directory) when writable, else the system temp directory."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class BuildSecrets:
    """The build's ``--secret`` values by id (a later flag for an id replaces an earlier one)."""

    def __init__(self, specs: Sequence[SecretSpec] = ()) -> None:
        self._specs = {spec.id: spec for spec in specs}

    def read(self, secret_id: str) -> bytes | None:
        """The secret's bytes, or None when the build was given no such secret (or its variable is unset)."""
        spec = self._specs.get(secret_id)
        if spec is None:
            return None
        if spec.env is not None or spec.file is None:
            name = spec.env or spec.id
            if name in os.environ:
                return os.environ[name].encode()
            if spec.env is not None:
                return None
        path = Path(spec.file or spec.id)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SecretError(f"--secret id={secret_id}: cannot read {path}: {exc.strerror or exc}") from None


class SshAgents:
    """The build's ``--ssh`` agents by id: sockets to forward to, private agents made from key files."""

    def __init__(self, specs: Sequence[SshSpec] = ()) -> None:
        self._specs = {spec.id: spec for spec in specs}
        self._sockets: dict[str, str] = {}
        self._agents: list[tuple[asyncio.subprocess.Process, Path]] = []
        self._lock = asyncio.Lock()

    async def socket(self, ssh_id: str) -> str | None:
        """The agent socket for ``ssh_id`` (starting a private agent for key files), or None if not given."""
        spec = self._specs.get(ssh_id)
        if spec is None:
            return None
        async with self._lock:
            if ssh_id not in self._sockets:
                self._sockets[ssh_id] = await self._open(spec)
            return self._sockets[ssh_id]

    async def _open(self, spec: SshSpec) -> str:
        if not spec.paths:
            sock = os.environ.get("SSH_AUTH_SOCK", "")
            if not sock:
                raise SecretError(f"--ssh {spec.id}: SSH_AUTH_SOCK is not set: start an ssh-agent or pass "
                                  f"--ssh {spec.id}=KEYFILE")
            return sock
        sockets = [p for p in spec.paths if _is_socket(p)]
        if sockets:
            if len(spec.paths) > 1:
                raise SecretError(f"--ssh {spec.id}: give one agent socket or key files, not both")
            return sockets[0]
        return await self._agent(spec)

    async def _agent(self, spec: SshSpec) -> str:
        binary, adder = shutil.which("ssh-agent"), shutil.which("ssh-add")
        if binary is None or adder is None:
            raise SecretError(f"--ssh {spec.id}: loading key files needs ssh-agent and ssh-add: install "
                              "openssh-client")
        directory = private_dir("lamina-ssh-")
        sock = directory / "agent.sock"
        proc = await asyncio.create_subprocess_exec(binary, "-D", "-a", str(sock), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        self._agents.append((proc, directory))
        for _ in range(200):
            if sock.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        if not sock.exists():
            raise SecretError(f"--ssh {spec.id}: ssh-agent did not start")
        for path in spec.paths:
            try:
                key = Path(path).read_bytes()
            except OSError as exc:
                raise SecretError(f"--ssh {spec.id}: cannot read key {path}: {exc.strerror or exc}") from None
            add = await asyncio.create_subprocess_exec(
                adder, "-q", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env={**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": "",
                                                      "DISPLAY": ""},
            )
            _, err = await add.communicate(key)
            if add.returncode != 0:
                reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["ssh-add failed"]
                raise SecretError(f"--ssh {spec.id}: cannot load key {path} ({reason[0]}); passphrase-protected keys "
                                  "need a running agent: pass its socket instead")
        return str(sock)

    async def aclose(self) -> None:
        """Stop the private agents (their keys live nowhere else)."""
        for proc, directory in self._agents:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            shutil.rmtree(directory, ignore_errors=True)
        self._agents.clear()
        self._sockets.clear()


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False

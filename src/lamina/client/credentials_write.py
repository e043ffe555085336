"""Saving and erasing registry credentials the way ``docker login`` and ``docker logout`` do.

The file is docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``),
the one :class:`~lamina.client.credentials.CredentialStore` reads. Where the secret goes:

- ``credHelpers[host]``, else ``credsStore``, names a helper: ``docker-credential-NAME store`` reads
  ``{"ServerURL", "Username", "Secret"}`` on stdin and ``erase`` reads the server URL (the
  docker-credential-helpers protocol). config.json then keeps an empty ``auths[KEY]`` entry and no
  secret, as docker's native store does.
- otherwise ``auths[KEY] = {"auth": base64("USER:PASSWORD")}``.

``KEY`` is :func:`~lamina.client.credentials.server_key` (``https://index.docker.io/v1/`` for Docker Hub,
``host[:port]`` otherwise). Older spellings of the same registry (``https://host/v2/``...) are dropped
from ``auths`` on login and logout so a stale entry can never shadow the new one. Every other key of the
file is kept. The file is replaced atomically: a 0600 temporary file in the same directory, fsync,
rename, fsync of the directory (created 0700 when missing); an error leaves the old file as it was.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from .credentials import DOCKER_HUB_AUTH_KEY, CredentialError, CredentialStore, registry_host, server_key

__all__ = ["DockerConfig", "write_config"]

HELPER_TIMEOUT = 30.0


class DockerConfig:
    """One config.json, read once; :meth:`store` and :meth:`erase` write it back atomically."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or CredentialStore.default_path()
        self.doc: dict[str, Any] = CredentialStore.read_config(self.path)

    def helper_for(self, host: str) -> str | None:
        """The credential helper that holds ``host``'s secret: ``credHelpers[host]``, else ``credsStore``."""
        helpers = self.doc.get("credHelpers")
        if isinstance(helpers, dict):
            for key, name in helpers.items():
                if registry_host(key) == host and isinstance(name, str) and name:
                    return name
        store = self.doc.get("credsStore")
        return store if isinstance(store, str) and store else None

    def store(self, host: str, username: str, secret: str) -> str | None:
        """Save ``username``/``secret`` for ``host``; returns the helper used (None: config.json itself)."""
        key = server_key(host)
        auths = self._auths()
        helper = self.helper_for(host)
        if helper:
            payload = json.dumps({"ServerURL": key, "Username": username, "Secret": secret})
            self._run_helper(helper, "store", payload, key)
            entry: dict[str, Any] = {}
        else:
            entry = {"auth": base64.b64encode(f"{username}:{secret}".encode()).decode()}
        self._drop_aliases(auths, host)
        auths[key] = entry
        self.save()
        return helper

    def erase(self, host: str) -> str | None:
        """Forget ``host``'s credentials; returns a warning when a configured helper erased none of them.

        Like ``docker logout``: with a helper, every spelling docker may have stored is erased and only
        "all of them failed" is worth a warning (a helper answers an error for an entry it never had).
        """
        warning = None
        helper = self.helper_for(host)
        if helper:
            failures: list[str] = []
            keys = _spellings(host)
            for key in keys:
                try:
                    self._run_helper(helper, "erase", key, key)
                except CredentialError as exc:
                    failures.append(str(exc))
            if len(failures) == len(keys):
                warning = failures[0]
        auths = self.doc.get("auths")
        if isinstance(auths, dict) and self._drop_aliases(auths, host):
            self.save()
        return warning

    def save(self) -> None:
        write_config(self.path, self.doc)

    def _auths(self) -> dict[str, Any]:
        auths = self.doc.setdefault("auths", {})
        if not isinstance(auths, dict):
            raise CredentialError(f"docker config {self.path}: 'auths' must be a JSON object; fix or remove it")
        return auths

    @staticmethod
    def _drop_aliases(auths: dict[str, Any], host: str) -> bool:
        stale = [key for key in auths if registry_host(key) == host]
        for key in stale:
            del auths[key]
        return bool(stale)

    def _run_helper(self, name: str, action: str, stdin: str, server: str) -> None:
        program = f"docker-credential-{name}"
        fix = f"check that `{program} list` works, or remove {name!r} from credsStore/credHelpers in {self.path}"
        try:
            proc = subprocess.run([program, action], input=stdin.encode(), capture_output=True,
                                  timeout=HELPER_TIMEOUT, check=False)
        except FileNotFoundError:
            raise CredentialError(f"credential helper {program} not found on PATH: install it, or remove "
                                  f"{name!r} from credsStore/credHelpers in {self.path}") from None
        except subprocess.TimeoutExpired:
            raise CredentialError(f"credential helper {program} did not {action} credentials for {server} "
                                  f"within {HELPER_TIMEOUT:.0f}s: {fix}") from None
        if proc.returncode != 0:
            said = " ".join((proc.stdout + proc.stderr).decode("utf-8", "replace").split())
            raise CredentialError(f"credential helper {program} could not {action} credentials for {server} "
                                  f"({said or f'exit status {proc.returncode}'}): {fix}")


def _spellings(host: str) -> list[str]:
    """The keys docker logout erases from a helper: the server key and its http/https forms."""
    if server_key(host) == DOCKER_HUB_AUTH_KEY:
        return [DOCKER_HUB_AUTH_KEY]
    return [host, f"http://{host}", f"https://{host}"]


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parent with mode 0700 (docker's MkdirAll(dir, 0700))."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with suppress(FileExistsError):
            path.mkdir(mode=0o700)


def write_config(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` atomically, mode 0600 (a symlinked config.json: its target)."""
    target = path.resolve() if path.is_symlink() else path
    data = (json.dumps(doc, indent="\t") + "\n").encode()
    try:
        _make_dirs(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp creates the file 0600
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise CredentialError(f"cannot write docker config {target}: {exc.strerror or exc}; check the "
                              "directory's owner and permissions, or point DOCKER_CONFIG elsewhere") from None

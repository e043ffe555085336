"""Users from an Apache htpasswd file with bcrypt hashes (``htpasswd -B``), as CNCF distribution reads it.

Why a cache: a bcrypt check costs tens of milliseconds by design, and Basic auth sends the password on
every request; a verified (user, password hash) pair is remembered for a minute so a push of many blobs
pays once. The file is re-read when its mtime changes, so adding a user needs no restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import bcrypt

from ..config import ConfigError

__all__ = ["Htpasswd"]

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
_CACHE_SECONDS = 60.0


def _parse(path: Path, text: str) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"htpasswd {path}:{number}: expected USER:BCRYPT-HASH")
        if not hashed.startswith(_BCRYPT_PREFIXES):
            raise ConfigError(f"htpasswd {path}:{number}: user {user!r} has a non-bcrypt hash; use htpasswd -B")
        users[user] = hashed.encode()
    return users


class Htpasswd:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._users: dict[str, bytes] = {}
        self._verified: dict[tuple[str, bytes], float] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file if it changed; ConfigError when it is unreadable or malformed."""
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            users = _parse(self.path, self.path.read_text())
        except OSError as exc:
            raise ConfigError(f"htpasswd {self.path}: {exc.strerror or exc}") from None
        with self._lock:
            self._users, self._mtime, self._verified = users, mtime, {}

    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s; a changed file is picked up first."""
        with contextlib.suppress(ConfigError):  # keep the last good users rather than lock everyone out mid-edit
            self.reload()
        hashed = self._users.get(user)
        if hashed is None:
            return False
        key = (user, hashlib.sha256(hashed + b"\0" + password.encode()).digest())
        now = time.monotonic()
        with self._lock:
            if self._verified.get(key, 0.0) > now:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._verified) > 10000:
                    self._verified.clear()
                self._verified[key] = now + _CACHE_SECONDS
        return ok

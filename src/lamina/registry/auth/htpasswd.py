"""Users from an Apache htpasswd file with bcrypt hashes (``htpasswd -B``), as CNCF distribution reads it.

Why a cache: a bcrypt check costs tens of milliseconds by design, and Basic auth sends the password on
every request; a verified (user, password hash) pair is remembered for a minute so a push of many blobs
pays once. The file is re-read when its mtime changes, so adding a user needs no restart.

Why a dummy hash: an unknown user must cost the same bcrypt check as a known one, or the answer's
timing tells which usernames exist. Every file load makes one dummy hash with the highest cost among
the file's hashes, and an unknown user is checked against it (and refused whatever the result). The
remembered verifications are compared with :func:`hmac.compare_digest`, one entry per user.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

import bcrypt

from ..settingerror import ConfigError

__all__ = ["Htpasswd"]

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
_CACHE_SECONDS = 60.0
_DEFAULT_COST = 10  # the dummy's cost when the file holds no user (htpasswd -B's default is 5; bcrypt's 12)


def _cost(hashed: bytes) -> int:
    """The cost factor of a ``$2y$NN$...`` hash; the default when it is not readable."""
    field = hashed[4:6]
    return int(field) if field.isdigit() and 4 <= int(field) <= 31 else _DEFAULT_COST


def _dummy_hash(users: dict[str, bytes]) -> bytes:
    """A bcrypt hash of a random secret with the highest cost among ``users``: what an unknown user pays."""
    cost = max((_cost(h) for h in users.values()), default=_DEFAULT_COST)
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=cost))


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
        self._dummy = b""
        self._verified: dict[str, tuple[bytes, float]] = {}  # user -> (proof of the password, until)
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
        dummy = _dummy_hash(users)
        with self._lock:
            self._users, self._dummy, self._mtime, self._verified = users, dummy, mtime, {}

    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s; a changed file is picked up first. An unknown user costs
        the same bcrypt check as a known one (against the dummy hash) and is always False."""
        with contextlib.suppress(ConfigError):  # keep the last good users rather than lock everyone out mid-edit
            self.reload()
        with self._lock:
            hashed, dummy = self._users.get(user), self._dummy
            remembered = self._verified.get(user)
        checked = hashed if hashed is not None else dummy
        proof = hashlib.sha256(checked + b"\0" + password.encode()).digest()
        if remembered is not None and remembered[1] > time.monotonic() and hmac.compare_digest(remembered[0], proof):
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), checked)
        except ValueError:
            return False
        if ok and hashed is not None:
            with self._lock:
                self._verified[user] = (proof, time.monotonic() + _CACHE_SECONDS)
        return ok and hashed is not None

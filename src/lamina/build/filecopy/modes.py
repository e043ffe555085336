"""``COPY``/``ADD --chmod``: the octal and the symbolic forms, as BuildKit's file op applies them.

BuildKit's Dockerfile frontend (1.26, no labs) accepts an octal mode up to ``7777`` and chmod(1)'s
symbolic form — comma-separated clauses ``[ugoa]*([-+=]([rwxXst]*|[ugo]))+`` such as ``u+x,g-w``,
``a+r,o-r``, ``go-w,a+X``, ``u=rwx,g=rx,o=`` — and applies the symbolic form to each source's own mode
(fsutil's ``ModeStr``): an empty *who* means ``a`` (no umask), ``X`` adds execute only to directories and
to files that already have an execute bit, ``=`` clears the bits of the named classes first, and
``g=u`` copies another class's bits. Only an octal mode also becomes the mode of the directories the
copy creates (fsutil's ``CopyInfo.Mode``); with a symbolic one they stay 0755.

:class:`Chmod` is pure (no I/O): :func:`parse_chmod` validates once, :meth:`Chmod.apply` maps a mode.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass

__all__ = ["Chmod", "ChmodError", "parse_chmod"]

_CLAUSE = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+$")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}  # the permission and special bits each class owns


class ChmodError(ValueError):
    """A ``--chmod`` value that is neither an octal mode nor a valid symbolic one."""


@dataclass(frozen=True, slots=True)
class Chmod:
    """A parsed ``--chmod``: ``octal`` (a fixed mode) or ``clauses`` (symbolic, applied per source mode)."""

    text: str
    octal: int | None = None
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    @property
    def created_dir_mode(self) -> int:
        """The mode of a directory the copy creates: the octal mode, else 0755."""
        return self.octal if self.octal is not None else 0o755

    def apply(self, mode: int, *, is_dir: bool) -> int:
        """The new permission bits (with setuid/setgid/sticky) for a source whose mode is ``mode``."""
        perm = stat.S_IMODE(mode)
        if self.octal is not None:
            # BuildKit replaces the permission bits; an octal mode above 0777 replaces the special bits too
            return self.octal if self.octal > 0o777 else (perm & 0o7000) | self.octal
        for who, actions in self.clauses:
            classes = who.replace("a", "ugo") or "ugo"
            mask = 0
            for c in set(classes):
                mask |= _WHO_BITS[c]
            for op, what in actions:
                bits = _bits(what, perm, is_dir) & mask
                if op == "+":
                    perm |= bits
                elif op == "-":
                    perm &= ~bits
                else:
                    perm = (perm & ~mask) | bits
        return perm


def _copy_class(source: str, perm: int) -> int:
    """``g=u``: the rwx bits of class ``source`` spread to every class (masked by the caller)."""
    shift = {"u": 6, "g": 3, "o": 0}[source]
    rwx = (perm >> shift) & 0o7
    return rwx << 6 | rwx << 3 | rwx


def _bits(what: str, perm: int, is_dir: bool) -> int:
    if what in ("u", "g", "o"):
        return _copy_class(what, perm)
    bits = 0
    for symbol in what:
        if symbol == "r":
            bits |= 0o444
        elif symbol == "w":
            bits |= 0o222
        elif symbol == "x":
            bits |= 0o111
        elif symbol == "X":
            if is_dir or perm & 0o111:
                bits |= 0o111
        elif symbol == "s":
            bits |= 0o6000
        elif symbol == "t":
            bits |= 0o1000
    return bits


def parse_chmod(value: str) -> Chmod:
    """``--chmod=VALUE`` as BuildKit accepts it; raises :class:`ChmodError` with one line naming it."""
    if value and all(c in "01234567" for c in value):
        mode = int(value, 8)
        if mode > 0o7777:
            raise ChmodError(f"invalid --chmod={value}: octal mode out of range (0 to 7777)")
        return Chmod(value, octal=mode)
    clauses = []
    for clause in value.split(","):
        if not _CLAUSE.match(clause):
            raise ChmodError(
                f"invalid --chmod={value}: expected an octal mode (755) or symbolic clauses (u+x,g-w, a+r,o-r, "
                f"u=rwx,g=rx,o=); {clause!r} is neither"
            )
        who = clause[: len(clause) - len(clause.lstrip("ugoa"))]
        actions = tuple((m.group(1), m.group(2)) for m in _ACTION.finditer(clause[len(who):]))
        clauses.append((who, actions))
    return Chmod(value, clauses=tuple(clauses))

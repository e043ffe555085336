"""Resolve a Dockerfile ``USER`` / ``--chown`` spec against the image's /etc/passwd and /etc/group.

Semantics follow runc's libcontainer ``GetExecUser`` (what Docker and BuildKit use): ``""`` is root;
a name must exist in passwd; a numeric uid need not (its gid is then 0); an explicit group (name or
gid) replaces the primary gid and disables supplementary groups; otherwise the user's supplementary
groups are the /etc/group entries that list it by name. The process's group list (``additional_gids``,
runc's ``process.user.additionalGids``) starts with the primary gid, as BuildKit's ``WithUIDGID`` makes
it through containerd's ``ensureAdditionalGids``: ``USER app`` runs with groups ``1000,2000,2001``,
``USER 1234:1234`` with ``1234``, ``USER 1234`` with ``0``.

``COPY --chown``/``ADD --chown`` and the directories WORKDIR creates for the stage's USER resolve
differently (:func:`resolve_chown`, BuildKit's file op ``readUser``): a name takes its passwd uid and
gid, a bare number is used as uid *and* gid (``--chown=1234`` -> 1234:1234, ``USER 1234`` + ``WORKDIR``
-> a 1234:1234 directory), a group part (name from /etc/group, or a number) replaces the gid, and a
name the image lacks is not an error (uid 0; the gid unchanged).

The files are read through :func:`resolve_in_root`, so an image whose /etc/passwd is a symlink to the
host's cannot leak it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.build.confined import Missing, SymlinkLoop, resolve_confined

__all__ = ["ResolvedUser", "UnknownUser", "resolve_chown", "resolve_in_root", "resolve_user"]


class UnknownUser(LookupError):
    """The user or group name is not in the image."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()  # the process's groups: the primary gid first, then supplementary
    name: str = ""  # the passwd name, "" when the uid is not in passwd
    home: str = "/"  # from passwd ("/root" for uid 0 without an entry); RUN exports it as HOME when unset


def resolve_in_root(root: str | os.PathLike[str], path: str) -> Path:
    """Resolve ``path`` as if ``root`` were ``/``: symlinks (absolute or relative) never leave ``root``.

    The last component is followed too; the result may not exist. Like ``chroot`` path lookup, ``..``
    at the top stays at the top (:func:`lamina.build.confined.resolve_confined`).
    """
    base = Path(root)

    def readlink(parts: Sequence[str]) -> str | None:
        candidate = base.joinpath(*parts)
        if not candidate.is_symlink():
            if not os.path.lexists(candidate):
                raise Missing
            return None
        return os.readlink(candidate)

    try:
        parts, _ = resolve_confined(path, readlink)
    except SymlinkLoop as exc:
        raise OSError(f"{exc} in {root}") from None
    return base.joinpath(*parts)


def _read_db(root: str | os.PathLike[str], path: str) -> list[list[str]]:
    try:
        text = resolve_in_root(root, path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def resolve_user(rootfs: str | os.PathLike[str], spec: str) -> ResolvedUser:
    """``spec`` is ``user[:group]`` where each part is a name or a number; see module doc."""
    user_arg, _, group_arg = spec.strip().partition(":")
    if not user_arg:
        if group_arg:
            user_arg = "0"
        else:
            root = next((row for row in _read_db(rootfs, "/etc/passwd") if len(row) > 5 and row[2] == "0"), None)
            return ResolvedUser(0, 0, (0,), name="root", home=root[5] if root is not None and root[5] else "/root")
    passwd = [row for row in _read_db(rootfs, "/etc/passwd") if len(row) >= 4]
    uid_num = _int(user_arg)
    entry = None
    for row in passwd:
        if row[0] == user_arg or (uid_num is not None and row[2] == user_arg):
            entry = row
            break
    if entry is None and uid_num is None:
        raise UnknownUser(f"unable to find user {user_arg}: no matching entries in passwd file")
    if entry is not None:
        uid, gid = _int(entry[2]), _int(entry[3])
        if uid is None or gid is None:
            raise UnknownUser(f"invalid /etc/passwd entry for user {user_arg}: {':'.join(entry)}")
        name, home = entry[0], (entry[5] if len(entry) > 5 and entry[5] else "/")
    else:
        uid, gid, name = uid_num or 0, 0, ""
        home = "/root" if uid == 0 else "/"  # Docker's defaults when passwd has no entry
    groups = [row for row in _read_db(rootfs, "/etc/group") if len(row) >= 3 and _int(row[2]) is not None]
    if group_arg:
        gid_num = _int(group_arg)
        match = next((row for row in groups if row[0] == group_arg or row[2] == group_arg), None)
        if match is not None:
            gid = int(match[2])
        elif gid_num is not None:
            gid = gid_num
        else:
            raise UnknownUser(f"unable to find group {group_arg}: no matching entries in group file")
        return ResolvedUser(uid, gid, (gid,), name, home)
    extra: list[int] = [gid]
    if name:
        for row in groups:
            members = row[3].split(",") if len(row) > 3 else []
            g = int(row[2])
            if name in members and g not in extra:
                extra.append(g)
    return ResolvedUser(uid, gid, tuple(extra), name, home)


def _number(text: str) -> int | None:
    """A uid/gid as BuildKit's ``llb.WithUser`` reads one (``strconv.ParseUint(s, 10, 32)``)."""
    return int(text) if text.isascii() and text.isdigit() and int(text) < 1 << 32 else None


def resolve_chown(rootfs: str | os.PathLike[str], spec: str) -> tuple[int, int]:
    """``--chown=user[:group]`` (and WORKDIR's owner) -> (uid, gid) as BuildKit's file op ``readUser``
    resolves it: a number is the uid and the gid, a name takes its passwd uid and gid, a group part
    replaces the gid. As in BuildKit, a name the image does not have leaves the id at 0 (user) or
    unchanged (group) instead of failing."""
    user_arg, _, group_arg = spec.strip().partition(":")
    uid = gid = 0
    number = _number(user_arg)
    if number is not None:
        uid = gid = number
    else:
        entry = next((r for r in _read_db(rootfs, "/etc/passwd") if len(r) >= 4 and r[0] == user_arg), None)
        if entry is not None and _int(entry[2]) is not None and _int(entry[3]) is not None:
            uid, gid = int(entry[2]), int(entry[3])
    if group_arg:
        number = _number(group_arg)
        if number is not None:
            gid = number
        else:
            row = next((r for r in _read_db(rootfs, "/etc/group") if len(r) >= 3 and r[0] == group_arg), None)
            if row is not None and _int(row[2]) is not None:
                gid = int(row[2])
    return uid, gid

"""Path resolution confined to a root, the one rule every part of the builder uses.

A path inside an image root filesystem or a build context is resolved the way ``chroot`` lookup does:
components are walked from the root, every symlink met is followed (an absolute target restarts at the
root, a relative one continues where the link is), and ``..`` at the top stays at the top, so nothing
ever resolves outside the root. What a component *is* comes from the caller (``readlink``), so the same
walk serves a directory on disk (COPY's destination, ``/etc/passwd`` for USER, WORKDIR) and the build
context's snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["MAX_SYMLINKS", "Missing", "SymlinkLoop", "resolve_confined"]

MAX_SYMLINKS = 255  # BuildKit's limit (fsutil, continuity) on the links followed in one lookup

ReadLink = Callable[[Sequence[str]], str | None]
"""Called with the components of an existing parent plus one more: the symlink target when that path is a
symlink, None when it is something else; raises :class:`Missing` when it does not exist (or its parent is
not a directory)."""


class Missing(Exception):
    """Raised by a ``readlink`` callback: the path does not exist."""


class SymlinkLoop(Exception):
    """More than :data:`MAX_SYMLINKS` symlinks on one lookup."""

    def __init__(self, path: str) -> None:
        super().__init__(f"too many levels of symbolic links resolving {path}")
        self.path = path


def resolve_confined(path: str, readlink: ReadLink, *, follow_last: bool = True) -> tuple[list[str], bool]:
    """The components ``path`` designates under the root, and whether all of them exist.

    Every existing symlink is followed (the last component only with ``follow_last``). From the first
    missing component on, the rest of ``path`` is kept as written and cleaned lexically (``.`` dropped,
    ``..`` removing the previous component), as a ``mkdir -p`` or a create would walk it.
    """
    pending = [p for p in path.split("/") if p]
    current: list[str] = []
    links = 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            if current:
                current.pop()
            continue
        try:
            target = readlink([*current, name])
        except Missing:
            current.append(name)
            for rest in pending:
                if rest == "..":
                    if current:
                        current.pop()
                elif rest != ".":
                    current.append(rest)
            return current, False
        if target is not None and (pending or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise SymlinkLoop(path)
            if target.startswith("/"):
                current = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        current.append(name)
    return current, True

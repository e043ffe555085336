"""The compiled methods of ``dataclasses`` kept between ``lamina`` processes, as Python keeps bytecode.

CPython's ``@dataclass`` writes the source text of every method it generates (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, and ``__setattr__`` / ``__delattr__`` of a frozen class) and compiles it with
``exec`` each time the class is created, that is at every import: about 0.5 ms for a frozen, slotted
class here. A fully cached ``lamina build`` creates 74 of them before its first request, 30-40 ms of the
~145 ms of CPU the whole process takes (measured by timing ``dataclasses._process_class``; the import of
the builder went from 98-113 ms to 66-86 ms with the compiled code reused).

While :func:`cached_dataclass_code` is active, the name ``exec`` inside the ``dataclasses`` module resolves
to :func:`_exec`, which compiles a given source text once and then runs the code object with the same
globals and namespace. Only the compilation is kept: ``compile(text, "<string>", "exec",
dont_inherit=True)`` is what ``exec`` of a string does in a module without ``__future__`` imports, so a
method made from a kept code object is the same function the module would have made (same code, same
annotations, same defaults, which live in the namespace, not the code). Nothing else of ``dataclasses``
is replaced, so a Python whose ``dataclasses`` generates other text only compiles (and keeps) new texts.

The code objects are kept in one marshal file beside lamina's own bytecode, named after the running
Python's bytecode magic number (a marshal file is only readable by the Python version that wrote it), under
``sys.pycache_prefix`` when one is set. It is handled like a ``.pyc``: written only when this process
compiled a text the file lacked, never when Python does not write bytecode (``PYTHONDONTWRITEBYTECODE``),
atomically (a temp file renamed over it, so concurrent processes each leave a whole file), and a file
or an entry that cannot be read or unmarshalled is compiled again and replaced. Each entry stays
marshalled until a class needs it, so a process decodes only its own (~2 ms for a cached build's 409).
``python -m lamina.dataclasscode`` writes it for every lamina module, as ``compileall`` writes bytecode
(also under ``PYTHONDONTWRITEBYTECODE``); ``scripts/bootstrap.sh`` runs it right after ``compileall``.
Without it, the first ``lamina`` process of an installation that writes bytecode writes the file.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import marshal
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

__all__ = ["cache_path", "cached_dataclass_code"]

_MAX_ENTRIES = 4096  # beyond this, a rewrite keeps only what the writing process used


class _Cache:
    """Source text -> marshalled code, decoded only when used (a process uses a fraction of the file)."""

    def __init__(self, path: Path, *, write: bool | None = None) -> None:
        self.path = path
        self.write = not sys.dont_write_bytecode if write is None else write
        self.known: dict[str, bytes] = _load(path)
        self.used: set[str] = set()
        self.compiled = 0

    def code(self, text: str) -> CodeType:
        self.used.add(text)
        raw = self.known.get(text)
        if raw is not None:
            with contextlib.suppress(EOFError, ValueError, TypeError):
                code = marshal.loads(raw)
                if isinstance(code, CodeType):
                    return code
        code = compile(text, "<string>", "exec", dont_inherit=True)
        self.known[text] = marshal.dumps(code)
        self.compiled += 1
        return code

    def save(self) -> None:
        if not self.compiled or not self.write:
            return
        keep = self.known if len(self.known) <= _MAX_ENTRIES else {t: self.known[t] for t in self.used}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                marshal.dump(keep, fh)
            os.replace(tmp, self.path)
        except OSError:  # a read-only installation: the next process compiles again, as without a .pyc
            with contextlib.suppress(OSError):
                tmp.unlink()


def _load(path: Path) -> dict[str, bytes]:
    try:
        with open(path, "rb") as fh:
            loaded = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, bytes)}


_active: _Cache | None = None


def _exec(source: Any, globals: dict[str, Any] | None = None, locals: Any = None) -> None:
    """``exec`` as ``dataclasses`` calls it, with a source text's compiled code taken from the cache."""
    if isinstance(source, str) and _active is not None:
        source = _active.code(source)
    builtins.exec(source, globals, locals)


def cache_path() -> Path:
    """Where this Python keeps the compiled methods: lamina's ``__pycache__`` (or its mirror under
    ``sys.pycache_prefix``), named after the bytecode magic number."""
    package = Path(__file__).resolve().parent
    from importlib._bootstrap_external import MAGIC_NUMBER  # loaded at start-up; importlib.util is not

    magic = MAGIC_NUMBER.hex()
    name = f"dataclass-code.{sys.implementation.cache_tag}-{magic}.marshal"
    if sys.pycache_prefix:
        return Path(sys.pycache_prefix) / package.relative_to(package.anchor) / name
    return package / "__pycache__" / name


@contextlib.contextmanager
def cached_dataclass_code(path: Path | None = None, *, write: bool | None = None) -> Iterator[None]:
    """Inside the block, dataclasses compile each method text at most once per installation (see module
    doc); ``path`` defaults to :func:`cache_path`; ``write`` None: unless Python writes no bytecode.
    Not reentrant: an inner block is a no-op."""
    global _active
    if _active is not None or "exec" in vars(dataclasses):
        yield
        return
    _active = _Cache(cache_path() if path is None else path, write=write)
    dataclasses.exec = _exec  # type: ignore[attr-defined]  # shadows the builtin in that module only
    try:
        yield
    finally:
        cache, _active = _active, None
        del dataclasses.exec  # type: ignore[attr-defined]
        cache.save()


def main() -> int:
    """``python -m lamina.dataclasscode``: write the file for every lamina module, as ``compileall`` writes
    bytecode (also under ``PYTHONDONTWRITEBYTECODE``); run by ``scripts/bootstrap.sh`` after it."""
    import importlib
    import pkgutil

    import lamina

    with cached_dataclass_code(write=True):
        for module in pkgutil.walk_packages(lamina.__path__, "lamina."):
            importlib.import_module(module.name)
        assert _active is not None
        kept, compiled = len(_active.known), _active.compiled
    path = cache_path()
    if path.is_file():
        os.utime(path)  # up to date as of now, also when nothing was new (the bootstrap compares times)
    print(f"{path}: {kept} method texts, {compiled} compiled now")
    return 0


if __name__ == "__main__":
    sys.exit(main())

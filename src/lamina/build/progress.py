"""Build progress: BuildKit-style ``--progress plain`` lines, a rich ``tty`` display, ``auto`` picks.

Plain output, one vertex per build step (parsed by CI logs and by our tests)::

    #3 [build 2/4] RUN make
    #3 MISS instruction changed
    #3 0.412 compiling...
    #3 DONE 1.2s
    #4 [build 3/4] COPY app /app
    #4 CACHED

Reporters are called from the event loop and from executor threads (RUN output), hence the lock.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

__all__ = ["PlainProgress", "Progress", "QuietProgress", "TtyProgress", "make_progress"]


class Progress(Protocol):
    def start(self, vertex: int, name: str) -> None: ...
    def cached(self, vertex: int, origin: str) -> None: ...
    def miss(self, vertex: int, reason: str) -> None: ...
    def log(self, vertex: int, data: bytes) -> None: ...
    def done(self, vertex: int) -> None: ...
    def error(self, vertex: int, message: str) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._partial: dict[int, str] = {}

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def start(self, vertex: int, name: str) -> None:
        self._started[vertex] = time.monotonic()
        self._write(f"#{vertex} {name}\n")

    def cached(self, vertex: int, origin: str) -> None:
        self._write(f"#{vertex} CACHED\n" if origin == "local" else f"#{vertex} CACHED ({origin})\n")

    def miss(self, vertex: int, reason: str) -> None:
        self._write(f"#{vertex} MISS {reason}\n")

    def _elapsed(self, vertex: int) -> float:
        return time.monotonic() - self._started.get(vertex, time.monotonic())

    def log(self, vertex: int, data: bytes) -> None:
        text = self._partial.pop(vertex, "") + data.decode(errors="replace")
        lines = text.split("\n")
        self._partial[vertex] = lines.pop()
        if lines:
            stamp = f"{self._elapsed(vertex):.3f}"
            self._write("".join(f"#{vertex} {stamp} {line.rstrip(chr(13))}\n" for line in lines))

    def _flush_partial(self, vertex: int) -> None:
        rest = self._partial.pop(vertex, "")
        if rest:
            self._write(f"#{vertex} {self._elapsed(vertex):.3f} {rest}\n")

    def done(self, vertex: int) -> None:
        self._flush_partial(vertex)
        self._write(f"#{vertex} DONE {self._elapsed(vertex):.1f}s\n")

    def error(self, vertex: int, message: str) -> None:
        self._flush_partial(vertex)
        self._write(f"#{vertex} ERROR: {message}\n")

    def message(self, text: str) -> None:
        self._write(f"{text}\n")

    def close(self) -> None:
        for vertex in list(self._partial):
            self._flush_partial(vertex)


class TtyProgress:
    """A live view of running steps (rich); finished steps scroll above it, RUN output shows its tail."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=stream or sys.stderr)
        self._lock = threading.Lock()
        self._names: dict[int, str] = {}
        self._started: dict[int, float] = {}
        self._tail: dict[int, str] = {}
        self._live = Live(console=self._console, refresh_per_second=8, transient=True, get_renderable=self._render)
        self._live.start()

    def _render(self) -> object:
        from rich.text import Text

        text = Text()
        with self._lock:
            for vertex, name in self._names.items():
                elapsed = time.monotonic() - self._started[vertex]
                text.append(f" => {name}", style="bold")
                text.append(f"  {elapsed:.1f}s\n", style="dim")
                tail = self._tail.get(vertex)
                if tail:
                    text.append(f"    {tail[-200:]}\n", style="dim")
        return text

    def start(self, vertex: int, name: str) -> None:
        with self._lock:
            self._names[vertex] = name
            self._started[vertex] = time.monotonic()

    def _finish(self, vertex: int, status: str, style: str) -> None:
        with self._lock:
            name = self._names.pop(vertex, f"#{vertex}")
            started = self._started.pop(vertex, time.monotonic())
            self._tail.pop(vertex, None)
        from rich.markup import escape

        elapsed = time.monotonic() - started
        line = f"[{style}] => {escape(status):7}[/] {escape(name)}  [dim]{elapsed:.1f}s[/]"
        self._console.print(line, soft_wrap=True)

    def cached(self, vertex: int, origin: str) -> None:
        self._finish(vertex, "CACHED" if origin == "local" else f"CACHED ({origin})", "blue")

    def miss(self, vertex: int, reason: str) -> None:
        return None

    def log(self, vertex: int, data: bytes) -> None:
        lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            with self._lock:
                self._tail[vertex] = lines[-1]

    def done(self, vertex: int) -> None:
        self._finish(vertex, "DONE", "green")

    def error(self, vertex: int, message: str) -> None:
        self._finish(vertex, "ERROR", "red")
        self._console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        self._console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._live.stop()


class QuietProgress:
    """``--progress quiet`` (buildx's, and ``-q``): nothing while building; a failure is still the CLI's one
    ``error:`` line (with the failed RUN's last output lines), and the digest still goes to stdout."""

    def start(self, vertex: int, name: str) -> None:
        pass

    def cached(self, vertex: int, origin: str) -> None:
        pass

    def miss(self, vertex: int, reason: str) -> None:
        pass

    def log(self, vertex: int, data: bytes) -> None:
        pass

    def done(self, vertex: int) -> None:
        pass

    def error(self, vertex: int, message: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(mode: str, stream: TextIO | None = None) -> Progress:
    """``plain``, ``tty``, ``quiet`` or ``auto`` (tty when the stream is a terminal)."""
    stream = stream or sys.stderr
    if mode == "quiet":
        return QuietProgress()
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "tty":
        return TtyProgress(stream)
    if mode == "plain":
        return PlainProgress(stream)
    raise ValueError(f"invalid --progress {mode!r}: expected auto, plain, tty or quiet")

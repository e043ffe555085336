"""The one error type of the Dockerfile frontend: every failure names the Dockerfile line."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DockerfileError", "suggest"]


class DockerfileError(Exception):
    """``Dockerfile:LINE: what is wrong`` (line 0 = not tied to a line, e.g. an unknown --target)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        if self.line:
            return f"Dockerfile:{self.line}: {self.message}"
        return f"Dockerfile: {self.message}"


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest option, or "" when nothing is close (as BuildKit's suggest)."""
    import difflib  # here: only a failing build asks for a suggestion

    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not match:
        match = difflib.get_close_matches(word.upper(), list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0].lower() if word.islower() else match[0]}?)" if match else ""

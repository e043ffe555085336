"""The mutable state of a stage while its instructions are applied, and what all stages share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.build.namedcontexts import NamedContext
from lamina.build.ops import MetaStep, Step
from lamina.oci import Platform

from .lex import Lexer
from .parse import Instruction

__all__ = ["DEFAULT_PATH", "DEFAULT_SHELL", "Context", "StageState", "as_written"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Docker's default on Linux
DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass
class Context:
    """What every stage shares while converting."""

    escape: str
    global_args: dict[str, str]  # platform ARGs + ARGs before the first FROM, after --build-arg
    build_args: dict[str, str]  # --build-arg as given
    proxy_env: tuple[str, ...]
    stage_index: dict[str, int]  # stage name -> index
    stage_count: int
    declared: set[str] = field(default_factory=set)  # ARG names seen (for the unused --build-arg warning)
    # --build-context: every named context (``contexts``), and the directory ones by name (``named_contexts``:
    # COPY --from and RUN --mount from= read files from those; image ones replace the reference instead)
    contexts: dict[str, NamedContext] = field(default_factory=dict)
    named_contexts: dict[str, NamedContext] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class StageState:
    """A stage while its instructions are applied (BuildKit's dispatchState)."""

    index: int
    platform: Platform
    config: dict[str, Any]
    env: dict[str, str]  # the build-time environment: image Env, then ENV/ARG in order
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    author: str | None = None
    cmd_set: bool = False

    def expand(self, ctx: Context, word: str) -> str:
        """Docker's ProcessWord against this stage's build-time environment."""
        return Lexer(escape=ctx.escape).process(word, self.env)[0]

    def meta(self, inst: Instruction, created_by: str) -> None:
        self.steps.append(MetaStep(line=inst.line, created_by=created_by, shown=as_written(inst)))


def as_written(inst: Instruction) -> str:
    """The instruction as the Dockerfile has it, for progress and error lines (BuildKit shows
    ``[2/4] RUN apt-get update``, not the history text): continuations joined, the command upper-cased,
    a heredoc's body left out (its first line names it)."""
    first = inst.original.split("\n", 1)[0].strip()
    word, _, rest = first.partition(" ")
    return f"{word.upper()} {rest}".rstrip()

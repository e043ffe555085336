"""The Dockerfile frontend: parse a Dockerfile, expand its variables, and convert it to a BuildGraph.

``convert(text, resolve_base=..., build_args=..., target=..., platform=...)`` is the whole job;
``parse``, ``process_word`` and ``process_words`` are exposed for tools and tests. Every failure is a
:class:`DockerfileError` whose text is ``Dockerfile:LINE: what is wrong``.
"""

from .convert import PLATFORM_ARGS, PROXY_ARGS, ResolveBase, convert, host_platform
from .errors import DockerfileError
from .lex import ExpansionError, process_word, process_words
from .parse import Dockerfile, Heredoc, Instruction, parse

__all__ = [
    "PLATFORM_ARGS",
    "PROXY_ARGS",
    "Dockerfile",
    "DockerfileError",
    "ExpansionError",
    "Heredoc",
    "Instruction",
    "ResolveBase",
    "convert",
    "host_platform",
    "parse",
    "process_word",
    "process_words",
]

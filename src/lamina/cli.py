"""The ``lamina`` command: a thin dispatcher to ``lamina registry|build|login|logout ...``.

Each program registers its own sub-commands (``lamina.registry.cli``, ``lamina.build.cli``); this module
only parses the first word, so start-up stays fast and one program's imports never slow the other.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from lamina import __version__
from lamina.dataclasscode import cached_dataclass_code
from lamina.gcpause import collector_paused, own_process

_PROGRAMS = {  # name -> ("module[:configure function]", summary); the function defaults to `configure`
    "registry": ("lamina.registry.cli", "run an OCI distribution-spec registry"),
    "build": ("lamina.build.cli", "build an image from a Dockerfile"),
    "login": ("lamina.client.logincli:configure_login", "log in to a registry (saved in docker's config.json)"),
    "logout": ("lamina.client.logincli:configure_logout", "remove a registry's saved credentials"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv`` None means this process's own command line (the ``lamina`` script)."""
    if argv is None:
        own_process()  # start-up's objects are frozen after each import pause (see lamina.gcpause)
        try:
            with cached_dataclass_code():  # dataclass methods compiled once per installation
                return _main(sys.argv[1:])
        finally:
            # The process ends next: its final collection need not walk every object the imports made
            # (measured: 10-20 ms of CPU of a fully cached `lamina build`, about a tenth of it).
            gc.freeze()
    return _main(list(argv))


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: lamina {{{','.join(_PROGRAMS)}}} ...\n")
        for name, (_, summary) in _PROGRAMS.items():
            print(f"  {name:10} {summary}")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"lamina {__version__}")
        return 0
    program = _PROGRAMS.get(argv[0])
    if program is None:
        print(f"lamina: unknown command {argv[0]!r} (expected one of: {', '.join(_PROGRAMS)})", file=sys.stderr)
        return 2
    module_name, _, configure = program[0].partition(":")
    with collector_paused():  # start-up: nothing to collect yet (see lamina.gcpause)
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"lamina {argv[0]}", description=program[1])
        getattr(module, configure or "configure")(parser)
        args = parser.parse_args(argv[1:])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("lamina: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

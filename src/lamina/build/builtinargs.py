"""BuildKit's built-in build args: ``--build-arg BUILDKIT_*`` and ``SOURCE_DATE_EPOCH``, each done or refused.

BuildKit's Dockerfile frontend and buildx read these build args as settings of the build rather than
as ARG values (Dockerfile reference, "BuildKit built-in build args"). Lamina does what each one does,
or refuses it in one line; none is accepted and dropped:

- ``SOURCE_DATE_EPOCH``: the timestamp of every layer entry, history entry and ``created``. As buildx
  does, the environment variable of that name becomes the build arg when ``--build-arg`` does not set it
  (so ``ARG SOURCE_DATE_EPOCH`` sees it too); the build arg wins.
- ``BUILDKIT_INLINE_CACHE`` (a Go boolean): true adds ``--cache-to type=inline``, as buildx does.
- ``BUILDKIT_CACHE_MOUNT_NS``: the namespace of every ``RUN --mount=type=cache`` id (``NS/ID``), applied
  by the frontend (:mod:`lamina.build.dockerfile.runmount`).
- ``BUILDKIT_DOCKERFILE_CHECK``: the ``# check=`` directive's value, replacing the directive
  (:mod:`lamina.build.dockerfile.checks`).
- ``BUILDKIT_SYNTAX``: replaces the ``# syntax=`` directive (:mod:`lamina.build.dockerfile.syntax`).
- ``BUILDKIT_SANDBOX_HOSTNAME``: the hostname of every RUN container (and its hosts file), part of each
  RUN's cache key as in BuildKit's ExecOp (:mod:`lamina.build.runextras`).
- ``BUILDKIT_MULTI_PLATFORM`` and ``BUILDKIT_CONTEXT_KEEP_GIT_DIR``: false is what lamina does (accepted);
  true is refused. ``BUILDKIT_BUILD_NAME`` is refused.

Any other ``BUILDKIT_*`` name is an ordinary build arg (an ``ARG`` may declare it), warned about when no
``ARG`` consumes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BUILTIN_ARGS", "BuildArgRefused", "BuiltinArgs", "builtin_args"]

# Every build arg BuildKit's frontend or buildx reads as a build setting (the Dockerfile reference's list,
# plus BUILDKIT_DOCKERFILE_CHECK, which BuildKit reads for the check configuration).
BUILTIN_ARGS = (
    "BUILDKIT_BUILD_NAME",
    "BUILDKIT_CACHE_MOUNT_NS",
    "BUILDKIT_CONTEXT_KEEP_GIT_DIR",
    "BUILDKIT_DOCKERFILE_CHECK",
    "BUILDKIT_INLINE_CACHE",
    "BUILDKIT_MULTI_PLATFORM",
    "BUILDKIT_SANDBOX_HOSTNAME",
    "BUILDKIT_SYNTAX",
    "SOURCE_DATE_EPOCH",
)
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
# name -> why true is refused (false asks for what lamina does anyway)
_TRUE_REFUSED = {
    "BUILDKIT_MULTI_PLATFORM": "a single-platform build gives an image manifest, never an index; give "
                               "several --platform values for an index",
    "BUILDKIT_CONTEXT_KEEP_GIT_DIR": "it applies to git build contexts, which lamina does not take",
}
_REFUSED = {
    "BUILDKIT_BUILD_NAME": "lamina keeps no build history to name the build in",
}


class BuildArgRefused(ValueError):
    """A built-in build arg lamina cannot honour; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class BuiltinArgs:
    """What the built-in build args ask of the build itself (the frontend reads the rest from the args)."""

    source_date_epoch: int | None = None
    inline_cache: bool = False
    hostname: str | None = None  # BUILDKIT_SANDBOX_HOSTNAME


def _bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BuildArgRefused(f"--build-arg {name}={value}: expected a boolean (true, false, 1, 0)")


def builtin_args(build_args: Mapping[str, str], environ: Mapping[str, str]) -> tuple[dict[str, str], BuiltinArgs]:
    """The build args with ``SOURCE_DATE_EPOCH`` filled in from ``environ`` as buildx does, and what the
    built-in ones ask for; :class:`BuildArgRefused` for one lamina cannot honour, ValueError for a
    ``SOURCE_DATE_EPOCH`` that is not a number of seconds."""
    args = dict(build_args)
    if "SOURCE_DATE_EPOCH" not in args and environ.get("SOURCE_DATE_EPOCH", "").strip():
        args["SOURCE_DATE_EPOCH"] = environ["SOURCE_DATE_EPOCH"].strip()
    for name, why in _REFUSED.items():
        if name in args:
            raise BuildArgRefused(f"--build-arg {name} is not supported by lamina: {why}; remove it")
    for name, why in _TRUE_REFUSED.items():
        if name in args and _bool(name, args[name]):
            raise BuildArgRefused(f"--build-arg {name}={args[name]} is not supported by lamina: {why}")
    epoch = None
    text = args.get("SOURCE_DATE_EPOCH", "")
    if text:
        if not text.isdigit():
            raise ValueError(f"invalid SOURCE_DATE_EPOCH {text!r}: expected seconds since 1970")
        epoch = int(text)
    inline = "BUILDKIT_INLINE_CACHE" in args and _bool("BUILDKIT_INLINE_CACHE", args["BUILDKIT_INLINE_CACHE"])
    return args, BuiltinArgs(source_date_epoch=epoch, inline_cache=inline,
                             hostname=args.get("BUILDKIT_SANDBOX_HOSTNAME"))

"""The ``# syntax=`` parser directive (and the ``BUILDKIT_SYNTAX`` build arg that overrides it).

In BuildKit the directive names a frontend *image* that the daemon pulls and runs to turn the
Dockerfile into LLB. Most Dockerfiles written today start with ``# syntax=docker/dockerfile:1`` (or a
pinned ``:1.N``, ``:1.N.M``, a ``-labs`` channel, a ``@sha256:`` digest, the ``docker.io/`` spelling):
all of these name releases of the Dockerfile frontend that lamina builds in, so lamina uses its own and
says so once. Any other frontend image would change what the file means (a different syntax, or not a
Dockerfile at all), and lamina cannot run it: that is a one-line error naming the image, never a
silent fallback. ``--build-arg BUILDKIT_SYNTAX=dockerfile.v0`` names BuildKit's built-in frontend: the
directive is then not looked at, as in BuildKit.
"""

from __future__ import annotations

import re

from .errors import DockerfileError

__all__ = ["BUILTIN_FRONTEND", "check_syntax"]

BUILTIN_FRONTEND = "docker/dockerfile:1"
_BUILTIN_NAME = "dockerfile.v0"  # BuildKit's name of its built-in Dockerfile frontend
_REPOSITORIES = {"docker/dockerfile", "docker.io/docker/dockerfile", "index.docker.io/docker/dockerfile"}
# 1, 1.7, 1.7.1, each optionally -labs (or the older -experimental); and the moving tags of the 1.x line
_TAG = re.compile(r"^(?:1(?:\.\d+){0,2}(?:-labs|-experimental)?|latest|labs|experimental)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _is_builtin(image: str) -> bool:
    name, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        return False
    last_slash = name.rfind("/")
    repository, tag = name, "latest"
    if name.rfind(":") > last_slash:
        repository, _, tag = name.rpartition(":")
    return repository.lower() in _REPOSITORIES and bool(_TAG.match(tag))


def check_syntax(directive: str | None, build_arg: str | None = None) -> str | None:
    """The note to print once when the file asks for the Dockerfile frontend lamina builds in (None when
    it asks for nothing); DockerfileError naming the image for any other frontend image.

    ``build_arg`` is ``--build-arg BUILDKIT_SYNTAX=IMAGE``, which BuildKit lets override the directive."""
    image = (build_arg if build_arg else directive or "").strip()
    if not image or (build_arg and image == _BUILTIN_NAME):
        return None
    source = "--build-arg BUILDKIT_SYNTAX" if build_arg else "# syntax"
    if not _is_builtin(image):
        raise DockerfileError(
            f"{source}={image}: lamina cannot run other frontend images, only its built-in Dockerfile frontend;"
            f" remove the line or use # syntax={BUILTIN_FRONTEND}"
        )
    return f"{source}={image}: using lamina's built-in Dockerfile frontend (BuildKit's Dockerfile 1.x syntax)"

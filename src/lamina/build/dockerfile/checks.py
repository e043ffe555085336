"""The ``# check=`` parser directive: BuildKit's build-check configuration, and what lamina can honour of it.

BuildKit reads ``# check=skip=RULE,RULE|all;error=true|false;experimental=RULE|all`` (``;``-separated
``key=value`` pairs, keys case-insensitive) to configure its lint rules (``StageNameCasing``,
``JSONArgsRecommended``, ...). Lamina runs none of those rules, so skipping any of them is already
true and is accepted; ``error=true`` (fail the build on a violation) and ``experimental=`` (run more
rules) ask for checks lamina cannot run: they are refused with one line, unless ``skip=all`` turns every
check off anyway. A malformed directive is an error, as in BuildKit. ``--build-arg
BUILDKIT_DOCKERFILE_CHECK=...`` takes the same value and replaces the directive, as in BuildKit.
"""

from __future__ import annotations

from .errors import DockerfileError

__all__ = ["check_directive"]

_KEYS = ("skip", "error", "experimental")


def check_directive(value: str | None, source: str = "# check") -> None:
    """Validate ``# check=value`` (None: no directive; ``source`` names where the value came from); raise
    DockerfileError (line 1) for what cannot be honoured."""
    if value is None:
        return
    fields: dict[str, str] = {}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, item = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise DockerfileError(
                f"{source}={value}: invalid check directive part {part!r} "
                "(expected skip=RULES|all, error=true|false, experimental=RULES|all)", 1
            )
        fields[key] = item.strip()
    error = fields.get("error", "false").lower()
    if error not in ("true", "false", "1", "0"):
        raise DockerfileError(f"{source}={value}: error={fields['error']!r} is not a boolean", 1)
    skip_all = "all" in {rule.strip().lower() for rule in fields.get("skip", "").split(",")}
    if skip_all:
        return
    if error in ("true", "1"):
        raise DockerfileError(
            f"{source}={value}: lamina runs none of BuildKit's build checks, so error=true cannot be honoured; "
            "remove it (or add skip=all)", 1
        )
    if fields.get("experimental"):
        raise DockerfileError(
            f"{source}={value}: lamina runs none of BuildKit's build checks, so experimental= cannot be honoured; "
            "remove it (or add skip=all)", 1
        )

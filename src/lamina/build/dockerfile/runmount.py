"""``RUN --mount=...``: BuildKit's mount syntax, defaults and errors, into :mod:`lamina.build.mounts` values.

Parsing follows BuildKit's ``instructions/commands_runmount.go`` (``parseMount`` + ``validateMount``): the
value is one CSV record of ``key=value`` fields (``ro``/``rw``/``required`` may stand alone), keys are
case-insensitive, values are expanded with the stage's variables except ``from`` (which refuses them),
``type`` defaults to ``bind``; ``ro`` defaults to true for bind, secret and ssh mounts and to false for
cache and tmpfs; ``mode``/``uid``/``gid`` are for cache, secret and ssh only; ``size`` (go-units
``RAMInBytes``: ``64m``, ``1g``, binary multiples) for tmpfs only. The defaults are those of the converter
(``dockerfile2llb/convert_runmount.go``, ``convert_secrets.go``, ``convert_ssh.go`` and LLB's exec op):
a relative target is joined with WORKDIR and ``/`` is refused; a cache ``id`` defaults to the cleaned
target as written; a secret's id is ``source`` or ``id`` or else the target's base name, its file
``/run/secrets/<id>`` unless ``env=`` asks for a variable only, mode 0400; an ssh mount's id is
``default``, its socket ``/run/buildkit/ssh_agent.<n>`` (n counts the RUN's ssh mounts), mode 0600, and
the RUN gets ``SSH_AUTH_SOCK`` pointing at the first one unless it sets that itself.

``--build-arg BUILDKIT_CACHE_MOUNT_NS=NS`` puts every cache id in that namespace (``NS/ID``), as BuildKit's
converter does (``cacheIDNamespace + "/" + id``).

Combinations BuildKit would silently ignore (``from``/``source`` on tmpfs, ``id`` on a bind, ``from`` on
ssh) are refused here, so nothing written in a Dockerfile is accepted and dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import posixpath
import re
from collections.abc import Callable, Sequence

from lamina.build.mounts import (
    BindMount,
    CacheMount,
    MountFrom,
    RunMount,
    SecretMount,
    SshMount,
    TmpfsMount,
)

from .copy import from_reference
from .errors import DockerfileError, suggest
from .named import dir_context_for
from .parse import Instruction
from .state import Context, StageState

__all__ = ["MountSyntaxError", "mount_from", "mount_froms", "parse_mount", "parse_mounts", "ram_in_bytes", "run_mounts",
           "ssh_auth_sock"]

_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")
_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "mode", "uid", "gid",
    "src", "dst", "ro", "rw", "readwrite", "size", "env", "destination",
)
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_VARIABLE = re.compile(r"\$.")
_UINT32 = 1 << 32

ResolveFrom = Callable[[str], MountFrom]


class MountSyntaxError(ValueError):
    """One ``--mount`` value is wrong; the message names the offending field (the caller adds the line)."""


def _bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise MountSyntaxError(f"invalid value for {key}: {value}")


def _uint(key: str, value: str, base: int) -> int:
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value) or int(value, base) >= _UINT32:
        raise MountSyntaxError(f"invalid value {value} for {key}")
    return int(value, base)


def ram_in_bytes(value: str) -> int:
    """go-units ``RAMInBytes``: ``512``, ``64k``, ``1.5m``, ``2GiB`` (multiples of 1024), as BuildKit's ``size``."""
    match = _RAM.match(value)
    if not match or match.group(1).count(".") > 1:
        raise MountSyntaxError(f"invalid value for size: {value}")
    unit = (match.group(2) or "").lower()
    power = "kmgtp".index(unit) + 1 if unit else 0
    return int(float(match.group(1)) * (1024**power))


class _Raw:
    """The fields of one ``--mount`` as parsed, before defaults (BuildKit's instructions.Mount)."""

    def __init__(self) -> None:
        self.type = "bind"
        self.origin = ""
        self.source = ""
        self.target = ""
        self.readonly: bool | None = None  # None: the type's default (roAuto)
        self.required = False
        self.size: int | None = None
        self.id = ""
        self.sharing = ""
        self.mode: int | None = None
        self.uid: int | None = None
        self.gid: int | None = None
        self.env: str | None = None
        self.seen: set[str] = set()


def _fields(value: str) -> list[str]:
    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise MountSyntaxError(f"failed to parse csv mounts: {exc}") from None
    return rows[0] if rows else []


def _apply(raw: _Raw, field: str, expand: Callable[[str], str]) -> None:
    key, has_value, value = field.partition("=")
    key = key.lower()
    if not has_value:
        if key in ("readonly", "ro"):
            raw.readonly = True
        elif key in ("readwrite", "rw"):
            raw.readonly = False
        elif key == "required":
            if raw.type not in ("secret", "ssh"):
                raise MountSyntaxError(f"unexpected key '{key}' for mount type '{raw.type}'")
            raw.required = True
        else:
            raise MountSyntaxError(f"invalid field '{field}' must be a key=value pair")
        raw.seen.add(key)
        return
    if key == "from":
        if _VARIABLE.search(value):
            raise MountSyntaxError(f"'{key}' doesn't support variable expansion, define alias stage instead")
    else:
        value = expand(value)
    raw.seen.add(key)
    if key == "type":
        kind = value.lower()
        if kind not in _TYPES:
            raise MountSyntaxError(f"unsupported mount type {value!r}{suggest(kind, _TYPES)} (bind, cache, tmpfs, "
                                   "secret, ssh)")
        raw.type = kind
    elif key == "from":
        raw.origin = value
    elif key in ("source", "src"):
        raw.source = value
    elif key in ("target", "dst", "destination"):
        raw.target = value
    elif key in ("readonly", "ro"):
        raw.readonly = _bool(key, value)
    elif key in ("readwrite", "rw"):
        raw.readonly = not _bool(key, value)
    elif key == "required":
        if raw.type not in ("secret", "ssh"):
            raise MountSyntaxError(f"unexpected key '{key}' for mount type '{raw.type}'")
        raw.required = _bool(key, value)
    elif key == "size":
        if raw.type != "tmpfs":
            raise MountSyntaxError(f"unexpected key '{key}' for mount type '{raw.type}'")
        raw.size = ram_in_bytes(value)
    elif key == "env":
        if raw.type != "secret":
            raise MountSyntaxError(f"unexpected key '{key}' for mount type '{raw.type}'")
        raw.env = value
    elif key == "id":
        raw.id = value
    elif key == "sharing":
        sharing = value.lower()
        if sharing not in _SHARING:
            raise MountSyntaxError(f"unsupported sharing value {value!r}{suggest(sharing, _SHARING)} "
                                   "(shared, private, locked)")
        raw.sharing = sharing
    elif key == "mode":
        raw.mode = _uint(key, value, 8)
    elif key in ("uid", "gid"):
        setattr(raw, key, _uint(key, value, 10))
    else:
        raise MountSyntaxError(f"unexpected key '{key}' in '{field}'{suggest(key, _KEYS)}")


def _validate(raw: _Raw) -> None:
    """BuildKit's validateMount, plus refusals of fields the type would ignore."""
    if raw.type not in ("secret", "ssh", "cache"):
        for name in ("mode", "uid", "gid"):
            if getattr(raw, name) is not None:
                raise MountSyntaxError(f'{name} not allowed for "{raw.type}" type mounts')
    if raw.type == "secret":
        if raw.origin:
            raise MountSyntaxError("secret mount should not have a from")
        if raw.sharing:
            raise MountSyntaxError("secret mount should not define sharing")
        if not raw.source and not raw.target and not raw.id:
            raise MountSyntaxError("invalid secret mount. one of source, target required")
        if raw.source and raw.id:
            raise MountSyntaxError("both source and id can't be set")
    if raw.sharing and raw.type != "cache":
        raise MountSyntaxError(f"invalid cache sharing set for {raw.type} mount")
    ignored = {
        "tmpfs": ("from", "source", "src", "id"),
        "bind": ("id",),
        "ssh": ("from",),
        "secret": ("readonly", "ro", "readwrite", "rw"),
    }.get(raw.type, ())
    ignored = (*ignored, "readonly", "ro", "readwrite", "rw") if raw.type == "ssh" else ignored
    for name in ignored:
        if name in raw.seen:
            raise MountSyntaxError(f"'{name}' has no meaning for a {raw.type} mount: remove it")
    if raw.type == "ssh" and raw.source:
        raise MountSyntaxError("ssh does not support source")


def _target(raw: _Raw, workdir: str) -> str:
    target = raw.target
    if not posixpath.isabs(posixpath.normpath(target) if target else target):
        target = posixpath.join("/", workdir, target)
    target = _clean(target)
    if target == "/":
        raise MountSyntaxError(f'invalid mount target "{target}"')
    return target


def _clean(path: str) -> str:
    """Go's path.Clean of an absolute path."""
    cleaned = posixpath.normpath("/" + path)
    return "/" + cleaned.lstrip("/")


def parse_mount(
    value: str, *, expand: Callable[[str], str], resolve_from: ResolveFrom, workdir: str, ssh_index: int = 0
) -> RunMount:
    """One ``--mount`` value as a mount value; ``ssh_index`` numbers this RUN's ssh sockets."""
    raw = _Raw()
    for field in _fields(value):
        _apply(raw, field, expand)
    _validate(raw)
    if raw.type == "secret":
        return _secret(raw)
    if raw.type == "ssh":
        target = _clean(raw.target) if raw.target else f"/run/buildkit/ssh_agent.{ssh_index}"
        return SshMount(
            id=raw.id or "default",
            target=target,
            required=raw.required,
            mode=0o600 if raw.mode is None else raw.mode,
            uid=raw.uid or 0,
            gid=raw.gid or 0,
        )
    target = _target(raw, workdir)
    if raw.type == "tmpfs":
        return TmpfsMount(target=target, size=raw.size, readonly=bool(raw.readonly))
    origin = resolve_from(raw.origin) if raw.origin else MountFrom()
    source = _clean(raw.source) if raw.source else "/"
    if raw.type == "cache":
        return CacheMount(
            target=target,
            id=raw.id or posixpath.normpath(raw.target or "."),
            sharing=raw.sharing or "shared",  # type: ignore[arg-type]
            readonly=bool(raw.readonly),
            source=source,
            origin=origin,
            mode=raw.mode,
            uid=raw.uid,
            gid=raw.gid,
        )
    return BindMount(target=target, source=source, origin=origin, readonly=raw.readonly is not False)


def _secret(raw: _Raw) -> SecretMount:
    """BuildKit's dispatchSecret: the id, the file target (none for an env-only secret), the file mode."""
    secret_id = raw.source or raw.id
    if not secret_id:
        secret_id = posixpath.basename(raw.target)
    target: str | None = _clean(raw.target) if raw.target else None
    if raw.env is None and target is None:
        target = "/run/secrets/" + posixpath.basename(secret_id)
    if raw.env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", raw.env):
        raise MountSyntaxError(f"invalid secret env name {raw.env!r}: use letters, digits and _")
    return SecretMount(
        id=secret_id,
        target=target,
        env=raw.env,
        required=raw.required,
        mode=0o400 if raw.mode is None else raw.mode,
        uid=raw.uid or 0,
        gid=raw.gid or 0,
    )


def parse_mounts(
    values: Sequence[str], *, expand: Callable[[str], str], resolve_from: ResolveFrom, workdir: str
) -> tuple[RunMount, ...]:
    """Every ``--mount`` of one RUN, in order; an error names the offending value. Two mounts on one
    target are refused (runc would stack them and the RUN would see only the last)."""
    mounts: list[RunMount] = []
    ssh_count = 0
    for value in values:
        try:
            mount = parse_mount(value, expand=expand, resolve_from=resolve_from, workdir=workdir,
                                ssh_index=ssh_count)
        except MountSyntaxError as exc:
            raise MountSyntaxError(f"--mount={value}: {exc}") from None
        if isinstance(mount, SshMount):
            ssh_count += 1
        mounts.append(mount)
    targets = [m.target for m in mounts if m.target is not None]
    for target in targets:
        if targets.count(target) > 1:
            raise MountSyntaxError(f"two mounts on the same target {target!r}: give each its own target")
    return tuple(mounts)


def ssh_auth_sock(mounts: Sequence[RunMount]) -> str | None:
    """The socket LLB's exec op points ``SSH_AUTH_SOCK`` at: the first ssh mount's target."""
    for mount in mounts:
        if isinstance(mount, SshMount):
            return mount.target
    return None


def mount_froms(flags: Sequence[str]) -> list[str]:
    """The ``from=`` values of a RUN's ``--mount`` flags as written (for the stages a target needs)."""
    out = []
    for flag in flags:
        if not flag.startswith("--mount="):
            continue
        try:
            fields = _fields(flag[len("--mount="):])
        except MountSyntaxError:
            continue  # reported with its line when the RUN is dispatched
        for field in fields:
            key, _, value = field.partition("=")
            if key.lower() == "from" and value:
                out.append(value)
    return out


def mount_from(inst: Instruction, value: str, ctx: Context, st: StageState) -> MountFrom:
    """``from=``: a directory named context (``--build-context NAME=DIR``), else an earlier stage (name or
    index) or an image reference (or the image an image context puts in its place), as ``COPY --from``."""
    context = dir_context_for(ctx.contexts, value, st.platform)
    if context is not None:
        return MountFrom(context=context)
    if value.lower() == "scratch" and value.lower() not in ctx.stage_index:
        return MountFrom(image="scratch")  # an empty root (BuildKit's llb.Scratch())
    stage, image = from_reference(inst, value, ctx, st.index)
    return MountFrom(stage=stage) if stage is not None else MountFrom(image=image)


def run_mounts(st: StageState, inst: Instruction, ctx: Context, values: Sequence[str]) -> tuple[RunMount, ...]:
    """The ``--mount`` flags of a RUN in ``st``; any error is one DockerfileError naming the line and value."""

    def resolve(value: str) -> MountFrom:
        return mount_from(inst, value, ctx, st)

    try:
        mounts = parse_mounts(values, expand=lambda word: st.expand(ctx, word), resolve_from=resolve,
                              workdir=st.config.get("WorkingDir") or "/")
    except MountSyntaxError as exc:
        raise DockerfileError(f"RUN {exc}", inst.line) from None
    namespace = ctx.build_args.get("BUILDKIT_CACHE_MOUNT_NS", "")
    if not namespace:
        return mounts
    return tuple(dataclasses.replace(m, id=f"{namespace}/{m.id}") if isinstance(m, CacheMount) else m
                 for m in mounts)

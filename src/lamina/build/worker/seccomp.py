"""Docker's seccomp profile format in, the OCI runtime-spec ``linux.seccomp`` object out.

A profile in Docker's format (moby profiles/seccomp: ``defaultAction``, ``defaultErrnoRet``,
``architectures`` or ``archMap``, ``syscalls[]`` with ``names``, ``action``, ``errnoRet``, ``args`` and
``includes``/``excludes`` by ``caps``, ``arches`` and ``minKernel``) is a template: :func:`convert` selects,
the way Docker's ``setupSeccomp`` does, the rules that apply to one container's bounding capability set,
the host's architecture and the host's kernel, and returns the frozen :class:`LinuxSeccomp` value that
goes into runc's config.json (runtime-spec config-linux.md#seccomp). ``convert`` is pure: the
architecture and kernel are inputs; :func:`host_arch` and :func:`host_kernel` read them.

The profile file is found by :func:`find_profile` (an explicit path, ``$LAMINA_SECCOMP_PROFILE``, then the
files of Debian's ``golang-github-containers-common``) and :func:`default_seccomp` loads and converts it
once per process, then applies :func:`gate_namespaces`: that file is podman's profile, which (unlike
Docker's) allows ``unshare``, ``clone`` and ``clone3`` with namespace flags to every container, so a RUN
could create a user namespace holding every capability; lamina restores Docker's rule for containers
without ``CAP_SYS_ADMIN`` whatever profile is used. Fields Docker's loader also ignores (``comment``, and
the ``errno`` / ``defaultErrno`` names that containers-common writes beside the numeric ``errnoRet`` /
``defaultErrnoRet``) are ignored.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROFILE_ENV",
    "SYSTEM_PROFILES",
    "LinuxSeccomp",
    "SeccompArg",
    "SeccompProfileError",
    "SyscallRule",
    "convert",
    "default_seccomp",
    "find_profile",
    "gate_namespaces",
    "host_arch",
    "host_kernel",
    "load_profile",
]

PROFILE_ENV = "LAMINA_SECCOMP_PROFILE"
# Debian's golang-github-containers-common installs the first; an administrator may place the second.
SYSTEM_PROFILES = (Path("/usr/share/containers/seccomp.json"), Path("/etc/containers/seccomp.json"))

# runtime-spec config-linux.md#seccomp: the actions and operators runc accepts.
ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)

# Docker's two tables (profiles/seccomp/seccomp_linux.go): Go's GOARCH -> libseccomp's native name
# (the spelling of ``includes.arches``), and that name -> the SCMP_ARCH constant ``archMap`` uses.
_MACHINE_TO_NATIVE = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "mips64": "mips64",
    "riscv64": "riscv64",
}
NATIVE_TO_SCMP = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsle": "SCMP_ARCH_MIPSEL",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}


# Docker's default profile for a container without CAP_SYS_ADMIN: clone only without namespace flags
# (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET), clone3 answered ENOSYS (its
# flags sit in memory seccomp cannot read; libc falls back to clone), unshare refused with EPERM.
NAMESPACE_FLAGS = 0x7E020000
_GATED = frozenset({"clone", "clone3", "unshare"})
_ENOSYS = 38
_EPERM = 1


class SeccompProfileError(ValueError):
    """The profile is missing or not a valid Docker seccomp profile; the message is one line."""


@dataclass(frozen=True, slots=True)
class SeccompArg:
    """One argument comparison (config-linux.md#seccomp ``args``)."""

    index: int
    value: int
    value_two: int
    op: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "value": self.value, "valueTwo": self.value_two, "op": self.op}


@dataclass(frozen=True, slots=True)
class SyscallRule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": list(self.names), "action": self.action}
        if self.errno_ret is not None:
            out["errnoRet"] = self.errno_ret
        if self.args:
            out["args"] = [arg.to_json() for arg in self.args]
        return out


@dataclass(frozen=True, slots=True)
class LinuxSeccomp:
    """The ``linux.seccomp`` object of runc's config.json, as frozen (hashable) data."""

    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[SyscallRule, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"defaultAction": self.default_action}
        if self.default_errno_ret is not None:
            out["defaultErrnoRet"] = self.default_errno_ret
        if self.architectures:
            out["architectures"] = list(self.architectures)
        if self.flags:
            out["flags"] = list(self.flags)
        out["syscalls"] = [rule.to_json() for rule in self.syscalls]
        return out


def host_arch() -> str:
    """The host's architecture in libseccomp's native spelling (``amd64``, ``arm64``, ...)."""
    machine = platform.machine()
    return _MACHINE_TO_NATIVE.get(machine, machine)


def host_kernel() -> tuple[int, int]:
    """The running kernel's (version, major revision), the two numbers ``minKernel`` compares."""
    return parse_kernel(os.uname().release)


def parse_kernel(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        raise SeccompProfileError(f"cannot parse kernel version {release!r}: expected e.g. '5.10'")
    return int(match.group(1)), int(match.group(2))


def convert(
    profile: Mapping[str, Any], *, capabilities: Iterable[str], arch: str, kernel: tuple[int, int]
) -> LinuxSeccomp:
    """The rules of ``profile`` that apply to a container whose bounding set is ``capabilities``.

    ``arch`` is the native name (``amd64``), ``kernel`` the host's (version, major). A rule is dropped
    when its ``excludes`` match (any listed arch is ``arch``, any listed cap is held, the kernel is at
    least ``minKernel``) or its ``includes`` do not (``arch`` not listed, a listed cap not held, the
    kernel older than ``minKernel``), exactly as moby's ``setupSeccomp``.
    """
    if not isinstance(profile, Mapping):
        raise SeccompProfileError("seccomp profile must be a JSON object")
    default_action = profile.get("defaultAction") or ""
    syscalls = profile.get("syscalls") or []
    if not default_action and not syscalls:
        raise SeccompProfileError(
            "seccomp profile has no defaultAction and no syscalls (Docker reads that as unconfined): "
            "to run without seccomp use RUN --security=insecure"
        )
    _check_action(default_action, "defaultAction")
    if profile.get("listenerPath"):
        raise SeccompProfileError("seccomp profile sets listenerPath: lamina runs no seccomp notify agent")
    held = frozenset(capabilities)
    return LinuxSeccomp(
        default_action=default_action,
        default_errno_ret=_optional_int(profile, "defaultErrnoRet"),
        architectures=_architectures(profile, arch),
        flags=tuple(_strings(profile.get("flags"), "flags")),
        syscalls=tuple(
            _rule(call) for call in _list(syscalls, "syscalls") if _applies(call, held=held, arch=arch, kernel=kernel)
        ),
    )


def gate_namespaces(seccomp: LinuxSeccomp, *, capabilities: Iterable[str], arch: str) -> LinuxSeccomp:
    """``seccomp`` with Docker's namespace rules for ``clone``/``clone3``/``unshare`` replacing the
    profile's own, unless ``CAP_SYS_ADMIN`` is in the bounding set (then it is returned unchanged)."""
    if "CAP_SYS_ADMIN" in frozenset(capabilities):
        return seccomp
    kept = []
    for rule in seccomp.syscalls:
        names = tuple(name for name in rule.names if name not in _GATED)
        if names:
            kept.append(SyscallRule(names, rule.action, rule.errno_ret, rule.args))
    flags_arg = 1 if arch in ("s390", "s390x") else 0  # s390 swaps clone's first two arguments
    kept += [
        SyscallRule(
            ("clone",), "SCMP_ACT_ALLOW", None, (SeccompArg(flags_arg, NAMESPACE_FLAGS, 0, "SCMP_CMP_MASKED_EQ"),)
        ),
        SyscallRule(("clone3",), "SCMP_ACT_ERRNO", _ENOSYS),
        SyscallRule(("unshare",), "SCMP_ACT_ERRNO", _EPERM),
    ]
    return LinuxSeccomp(
        seccomp.default_action, seccomp.default_errno_ret, seccomp.architectures, seccomp.flags, tuple(kept)
    )


def _architectures(profile: Mapping[str, Any], arch: str) -> tuple[str, ...]:
    listed = _strings(profile.get("architectures"), "architectures")
    arch_map = _list(profile.get("archMap") or [], "archMap")
    if listed and arch_map:
        raise SeccompProfileError("seccomp profile sets both 'architectures' and 'archMap': use one of them")
    if listed:
        return tuple(listed)
    native = NATIVE_TO_SCMP.get(arch)
    for entry in arch_map:
        if isinstance(entry, Mapping) and entry.get("architecture") == native:
            return (native, *_strings(entry.get("subArchitectures"), "archMap.subArchitectures"))
    return ()  # libseccomp then filters the native architecture only


def _applies(call: Any, *, held: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    if not isinstance(call, Mapping):
        raise SeccompProfileError(f"seccomp profile: syscalls entry {call!r} is not an object")
    excludes = call.get("excludes") or {}
    includes = call.get("includes") or {}
    if arch in _strings(excludes.get("arches"), "excludes.arches"):
        return False
    if any(cap in held for cap in _strings(excludes.get("caps"), "excludes.caps")):
        return False
    if excludes.get("minKernel") and kernel >= _min_kernel(excludes["minKernel"]):
        return False
    arches = _strings(includes.get("arches"), "includes.arches")
    if arches and arch not in arches:
        return False
    if not all(cap in held for cap in _strings(includes.get("caps"), "includes.caps")):
        return False
    return not (includes.get("minKernel") and kernel < _min_kernel(includes["minKernel"]))


def _rule(call: Mapping[str, Any]) -> SyscallRule:
    name = call.get("name")
    names = _strings(call.get("names"), "names")
    if name and names:
        raise SeccompProfileError(f"seccomp profile: rule for {name!r} sets both 'name' and 'names': use one")
    names = [name] if name else names
    if not names:
        raise SeccompProfileError(f"seccomp profile: a syscalls entry names no syscall: {dict(call)!r}")
    action = call.get("action") or ""
    _check_action(action, f"action of {names[0]!r}")
    return SyscallRule(
        names=tuple(names),
        action=action,
        errno_ret=_optional_int(call, "errnoRet"),
        args=tuple(_arg(arg, names[0]) for arg in _list(call.get("args") or [], "args")),
    )


def _arg(arg: Any, syscall: str) -> SeccompArg:
    if not isinstance(arg, Mapping):
        raise SeccompProfileError(f"seccomp profile: argument {arg!r} of {syscall!r} is not an object")
    op = arg.get("op")
    if op not in OPERATORS:
        raise SeccompProfileError(f"seccomp profile: unknown operator {op!r} for {syscall!r}: use one of SCMP_CMP_*")
    try:
        return SeccompArg(int(arg["index"]), int(arg.get("value", 0)), int(arg.get("valueTwo", 0)), op)
    except (KeyError, TypeError, ValueError):
        raise SeccompProfileError(
            f"seccomp profile: argument {dict(arg)!r} of {syscall!r} needs integer index and value"
        ) from None


def _check_action(action: object, where: str) -> None:
    if action not in ACTIONS:
        raise SeccompProfileError(f"seccomp profile: unknown {where} {action!r}: use one of SCMP_ACT_*")


def _min_kernel(value: object) -> tuple[int, int]:
    if not isinstance(value, str):
        raise SeccompProfileError(f"seccomp profile: minKernel {value!r} must be a string like '4.8'")
    return parse_kernel(value)


def _optional_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SeccompProfileError(f"seccomp profile: {key} {value!r} must be an integer")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SeccompProfileError(f"seccomp profile: {where} must be a list, got {value!r}")
    return value


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    items = _list(value, where)
    if not all(isinstance(item, str) for item in items):
        raise SeccompProfileError(f"seccomp profile: {where} must be a list of strings, got {value!r}")
    return items


def find_profile(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The profile to use: ``explicit``, else ``$LAMINA_SECCOMP_PROFILE``, else the first system file."""
    environ = os.environ if env is None else env
    chosen = explicit or environ.get(PROFILE_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            source = "--seccomp-profile" if explicit else f"${PROFILE_ENV}"
            raise SeccompProfileError(f"seccomp profile {str(path)!r} (from {source}) not found: pass an existing file")
        return path
    for path in SYSTEM_PROFILES:
        if path.is_file():
            return path
    raise SeccompProfileError(
        "no seccomp profile for RUN: install Debian's golang-github-containers-common "
        f"(it ships {SYSTEM_PROFILES[0]}) or set {PROFILE_ENV}=PATH to a Docker-format profile"
    )


def load_profile(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SeccompProfileError(f"cannot read seccomp profile {str(path)!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise SeccompProfileError(f"seccomp profile {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SeccompProfileError(f"seccomp profile {str(path)!r} must hold a JSON object")
    return data


@functools.cache
def default_seccomp(path: Path, capabilities: tuple[str, ...]) -> LinuxSeccomp:
    """``path`` loaded, converted and namespace-gated for ``capabilities`` on this host, once per process
    and argument (a RUN start reuses it; the file is not read again)."""
    arch = host_arch()
    try:
        converted = convert(load_profile(path), capabilities=capabilities, arch=arch, kernel=host_kernel())
        return gate_namespaces(converted, capabilities=capabilities, arch=arch)
    except SeccompProfileError as exc:
        message = str(exc)
        if str(path) not in message:  # name the file: "seccomp profile PATH: unknown ..."
            message = message.replace("seccomp profile", f"seccomp profile {path}", 1)
        raise SeccompProfileError(message) from None

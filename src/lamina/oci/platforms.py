"""Platform specifiers as containerd's ``platforms`` package reads, normalises and writes them.

BuildKit and buildx turn every ``--platform`` value and ``FROM --platform`` into an OCI platform with
containerd's ``platforms.Parse`` and then ``platforms.Normalize``; ``TARGETPLATFORM`` is
``platforms.Format`` of the result. The same rules here:

- a specifier is ``os``, ``arch`` or ``os/arch[/variant]``; each part matches ``[A-Za-z0-9_.-]+``
  (the OS may carry a version in parentheses: ``windows(10.0.17763)``); a lone known OS gets the host's
  architecture, a lone known architecture the host's OS.
- normalisation: lower case; ``macos`` -> ``darwin``; ``x86_64``/``x86-64`` -> ``amd64`` (variant
  ``v1`` dropped); ``aarch64`` -> ``arm64`` (variant ``8``/``v8``/``v8.0`` dropped, ``9``/``v9.0`` ->
  ``v9``); ``i386`` -> ``386``; ``armhf`` -> ``arm/v7``, ``armel`` -> ``arm/v6``; ``arm`` without a
  variant (or ``7``) -> ``arm/v7``, ``5``/``6``/``8`` -> ``v5``/``v6``/``v8``. So ``linux/arm64/v8`` and
  ``arm64`` are ``linux/arm64``, and ``linux/arm`` is ``linux/arm/v7``.

Two checks containerd leaves to later failures are made here, so a typo is one clear line at once: the
OS and the architecture must be ones Go knows (``linux/amd46`` is refused). And ``ARCH/VARIANT``
with a known architecture where the OS belongs (``arm64/v8``, ``amd64/v2``: containerd would read
``os=amd64``) is read as the host OS's ``ARCH/VARIANT``.

Pure: the host platform is an argument; :func:`host_platform` reads it from ``os.uname()``.
"""

from __future__ import annotations

import os
import re

from .descriptor import FormatError, Platform

__all__ = ["KNOWN_ARCHITECTURES", "KNOWN_OS", "format_platform", "host_platform", "normalize_platform",
           "parse_platform", "parse_platforms"]

KNOWN_OS = frozenset(("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
                      "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"))
KNOWN_ARCHITECTURES = frozenset((
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips", "mipsle",
    "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64",
    "wasm",
))
_PART = re.compile(r"^[A-Za-z0-9_.-]+$")
_OS_PART = re.compile(r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?$")
_MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "armv7l": "arm", "armv6l": "arm"}
_EXAMPLE = "expected os/arch[/variant], e.g. linux/amd64 or linux/arm64"


def _normalize_os(name: str) -> str:
    name = name.lower()
    return "darwin" if name == "macos" else name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch: the canonical (architecture, variant) pair; '' is no variant."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return arch, variant


def normalize_platform(platform: Platform) -> Platform:
    """containerd's ``platforms.Normalize``: canonical OS, architecture and variant (None when empty)."""
    arch, variant = _normalize_arch(platform.architecture, platform.variant or "")
    return Platform(arch, _normalize_os(platform.os), variant or None, platform.os_version, platform.os_features)


def format_platform(platform: Platform) -> str:
    """containerd's ``platforms.Format``: ``os/arch[/variant]`` (what TARGETPLATFORM holds)."""
    return "/".join(part for part in (platform.os, platform.architecture, platform.variant) if part)


def host_platform() -> Platform:
    """The platform this process runs on, normalised (``linux/amd64`` on x86_64, ``linux/arm64`` on aarch64)."""
    uname = os.uname()
    machine = uname.machine.lower()
    variant = "v6" if machine == "armv6l" else ""
    arch = _MACHINES.get(machine, machine)
    return normalize_platform(Platform(arch, uname.sysname.lower() or "linux", variant or None))


def parse_platform(text: str, host: Platform | None = None) -> Platform:
    """One specifier -> a normalised :class:`Platform`; :class:`FormatError` (one line) if it is invalid.

    ``host`` fills what a one-part specifier leaves out (default: :func:`host_platform`)."""
    spec = text.strip()
    if not spec:
        raise FormatError(f"invalid platform {text!r}: empty; {_EXAMPLE}")
    if "*" in spec:
        raise FormatError(f"invalid platform {text!r}: wildcards are not supported; {_EXAMPLE}")
    parts = spec.split("/")
    if len(parts) > 3:
        raise FormatError(f"invalid platform {text!r}: too many parts; {_EXAMPLE}")
    os_match = _OS_PART.match(parts[0])
    if os_match is None:
        raise FormatError(f"invalid platform {text!r}: {parts[0]!r} is not a valid OS component; {_EXAMPLE}")
    for part in parts[1:]:
        if not _PART.match(part):
            raise FormatError(f"invalid platform {text!r}: {part!r} is not a valid component; {_EXAMPLE}")
    os_name, os_version = _normalize_os(os_match.group(1)), os_match.group(2) or None
    if len(parts) == 1:
        host = host or host_platform()
        if os_name in KNOWN_OS:
            return Platform(host.architecture, os_name, host.variant if host.os == os_name else None, os_version)
        if _normalize_arch(parts[0], "")[0] not in KNOWN_ARCHITECTURES:
            raise FormatError(f"invalid platform {text!r}: unknown operating system or architecture; {_EXAMPLE}")
        return _checked(Platform(parts[0], host.os), text)
    if len(parts) == 2 and os_name not in KNOWN_OS and _normalize_arch(parts[0], "")[0] in KNOWN_ARCHITECTURES:
        return _checked(Platform(parts[0], (host or host_platform()).os, parts[1]), text)  # arm64/v8, amd64/v2
    variant = parts[2] if len(parts) == 3 else None
    return _checked(Platform(parts[1], os_name, variant, os_version), text)


def _checked(platform: Platform, text: str) -> Platform:
    normal = normalize_platform(platform)
    if normal.os not in KNOWN_OS:
        raise FormatError(f"invalid platform {text!r}: unknown operating system {normal.os!r}; {_EXAMPLE}")
    if normal.architecture not in KNOWN_ARCHITECTURES:
        raise FormatError(f"invalid platform {text!r}: unknown architecture {normal.architecture!r}; {_EXAMPLE}")
    return normal


def parse_platforms(text: str, host: Platform | None = None) -> tuple[Platform, ...]:
    """A comma-separated list (``--platform linux/amd64,linux/arm64``), normalised, duplicates dropped
    (``linux/arm64`` and ``linux/arm64/v8`` are one platform), in the order given."""
    out: list[Platform] = []
    for item in text.split(","):
        platform = parse_platform(item, host)
        if platform not in out:
            out.append(platform)
    return tuple(out)

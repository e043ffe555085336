"""QEMU user-mode emulation for RUN steps whose platform is not the host's (binfmt_misc + qemu-user-static).

A RUN of a ``linux/arm64`` stage on an amd64 host executes arm64 binaries; the kernel hands them to
``qemu-aarch64`` through a binfmt_misc entry, as BuildKit's workers rely on (``tonistiigi/binfmt`` there,
Debian's ``qemu-user-static`` + ``binfmt-support`` here). Nothing in the container changes: the entry
must carry the **F** (fix-binary) flag, so the kernel opened the interpreter when it was registered and
the container's root filesystem needs no ``/usr/libexec/qemu-binfmt``. Debian registers its entries
``PF``. Emulation is the executor's business alone: the solver and the cache keys only know the platform.

:func:`check_emulation` runs before the container starts and, when the emulator is missing, disabled
or registered without F, raises :class:`EmulationUnavailable` with one line saying how to enable it.
Architectures a host runs natively (its own; ``386`` on amd64; ``arm`` on arm64) need no entry.
"""

from __future__ import annotations

from pathlib import Path

from lamina.oci import Platform, format_platform, normalize_platform

__all__ = ["BINFMT_DIR", "QEMU_NAMES", "EmulationUnavailable", "check_emulation", "emulator_for"]

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Go architecture -> the binfmt_misc entry Debian's qemu-user-static registers for it (qemu's target name)
QEMU_NAMES = {
    "amd64": "qemu-x86_64", "386": "qemu-i386", "arm64": "qemu-aarch64", "arm": "qemu-arm", "armbe": "qemu-armeb",
    "ppc64le": "qemu-ppc64le", "ppc64": "qemu-ppc64", "ppc": "qemu-ppc", "s390x": "qemu-s390x",
    "riscv64": "qemu-riscv64", "mips": "qemu-mips", "mipsle": "qemu-mipsel", "mips64": "qemu-mips64",
    "mips64le": "qemu-mips64el", "loong64": "qemu-loongarch64", "sparc64": "qemu-sparc64",
}
_NATIVE_EXTRA = {"amd64": {"386"}, "arm64": {"arm"}}  # 32-bit modes of a 64-bit host CPU
_ENABLE = (
    "install qemu-user-static and binfmt-support, then as root mount binfmt_misc "
    "(mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc) and run 'update-binfmts --enable {name}' "
    "(scripts/setup-emulation.sh does both)"
)


class EmulationUnavailable(Exception):
    """A RUN needs QEMU emulation that the host does not provide; the message says how to enable it."""


def emulator_for(platform: Platform, host: Platform) -> str | None:
    """The binfmt_misc entry a RUN for ``platform`` needs on ``host``; None when the host runs it natively."""
    want, have = normalize_platform(platform), normalize_platform(host)
    if want.os != have.os:
        raise EmulationUnavailable(
            f"RUN for {format_platform(want)} cannot execute on a {have.os} host: only {have.os} "
            "platforms run here (emulation translates CPUs, not operating systems)"
        )
    if want.architecture == have.architecture or want.architecture in _NATIVE_EXTRA.get(have.architecture, ()):
        return None
    name = QEMU_NAMES.get(want.architecture)
    if name is None:
        raise EmulationUnavailable(
            f"RUN for {format_platform(want)} needs emulation, but QEMU has no user-mode emulator for "
            f"{want.architecture!r}; build that stage FROM --platform=$BUILDPLATFORM and cross-compile"
        )
    return name


def check_emulation(platform: Platform, host: Platform, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Raise :class:`EmulationUnavailable` unless a RUN for ``platform`` can execute on ``host``;
    returns the binfmt_misc entry used (None: native)."""
    name = emulator_for(platform, host)
    if name is None:
        return None
    where = format_platform(normalize_platform(platform))
    entry = binfmt_dir / name
    try:
        lines = entry.read_text().splitlines()
    except FileNotFoundError:
        if not (binfmt_dir / "register").exists():
            problem = f"binfmt_misc is not mounted on {binfmt_dir}"
        else:
            problem = f"binfmt_misc has no {name} entry"
        raise EmulationUnavailable(
            f"RUN for {where} needs QEMU user emulation, but {problem}: {_ENABLE.format(name=name)}"
        ) from None
    except OSError as exc:
        raise EmulationUnavailable(f"RUN for {where}: cannot read {entry}: {exc.strerror or exc}") from None
    if not lines or lines[0].strip() != "enabled":
        raise EmulationUnavailable(
            f"RUN for {where} needs QEMU user emulation, but the binfmt_misc entry {name} is disabled: "
            f"run 'update-binfmts --enable {name}' as root"
        )
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        raise EmulationUnavailable(
            f"RUN for {where}: the binfmt_misc entry {name} lacks the F (fix-binary) flag, so its interpreter "
            "cannot be found inside the container: register it again with F (Debian's qemu-user-static does)"
        )
    return name

"""QEMU emulation checks: which RUNs need it, and one clear line when binfmt_misc cannot provide it.

The checks read a binfmt_misc directory; these tests give them one laid out as the kernel's is, in each
state a host can be in (not mounted, no entry, disabled, without the F flag, ready), and then the real
/proc/sys/fs/binfmt_misc, which scripts/setup-emulation.sh prepares (CI runs as root with it done).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.build.worker.emulation import BINFMT_DIR, EmulationUnavailable, check_emulation, emulator_for
from lamina.oci import Platform, host_platform, parse_platform

AMD64 = Platform("amd64", "linux")
ARM64 = Platform("arm64", "linux")
ENTRY = (
    "{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"
    "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n"
)


def _binfmt(tmp_path: Path, *, mounted: bool = True, state: str = "enabled", flags: str | None = "PF") -> Path:
    if mounted:
        (tmp_path / "register").write_text("")
        (tmp_path / "status").write_text("enabled\n")
        if flags is not None:
            (tmp_path / "qemu-aarch64").write_text(ENTRY.format(state=state, flags=flags))
    return tmp_path


@pytest.mark.parametrize(
    ("target", "host", "entry"),
    [
        ("linux/amd64", AMD64, None),
        ("linux/386", AMD64, None),  # 32-bit mode of the host CPU
        ("linux/amd64/v2", AMD64, None),
        ("linux/arm64", AMD64, "qemu-aarch64"),
        ("linux/arm/v7", AMD64, "qemu-arm"),
        ("linux/s390x", AMD64, "qemu-s390x"),
        ("linux/ppc64le", AMD64, "qemu-ppc64le"),
        ("linux/riscv64", AMD64, "qemu-riscv64"),
        ("linux/arm64/v8", ARM64, None),
        ("linux/arm/v7", ARM64, None),
        ("linux/amd64", ARM64, "qemu-x86_64"),
    ],
)
def test_emulator_needed(target: str, host: Platform, entry: str | None) -> None:
    assert emulator_for(parse_platform(target), host) == entry


def test_no_emulator_for_the_architecture_says_how_to_build_instead() -> None:
    with pytest.raises(EmulationUnavailable, match=r"QEMU has no user-mode emulator for 'wasm'.*\$BUILDPLATFORM"):
        emulator_for(Platform("wasm", "linux"), AMD64)


def test_another_os_cannot_be_emulated() -> None:
    with pytest.raises(EmulationUnavailable, match="RUN for windows/amd64 cannot execute on a linux host"):
        emulator_for(Platform("amd64", "windows"), AMD64)


def test_ready_entry_is_used(tmp_path: Path) -> None:
    assert check_emulation(ARM64, AMD64, _binfmt(tmp_path)) == "qemu-aarch64"
    assert check_emulation(AMD64, AMD64, tmp_path / "nowhere") is None  # native: binfmt_misc not even read


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"mounted": False}, "binfmt_misc is not mounted on {dir}: install qemu-user-static and binfmt-support"),
        ({"flags": None}, "binfmt_misc has no qemu-aarch64 entry: install qemu-user-static"),
        ({"state": "disabled"}, "the binfmt_misc entry qemu-aarch64 is disabled: run 'update-binfmts --enable"),
        ({"flags": "P"}, "lacks the F (fix-binary) flag"),
    ],
)
def test_missing_emulation_is_one_line_saying_how(tmp_path: Path, layout: dict[str, object], message: str) -> None:
    binfmt = _binfmt(tmp_path, **layout)  # type: ignore[arg-type]
    with pytest.raises(EmulationUnavailable) as info:
        check_emulation(ARM64, AMD64, binfmt)
    text = str(info.value)
    assert text.startswith("RUN for linux/arm64")
    assert message.format(dir=tmp_path) in text
    assert "\n" not in text
    if layout.get("mounted") is False or ("flags" in layout and layout["flags"] is None):
        assert "update-binfmts --enable qemu-aarch64" in text and "scripts/setup-emulation.sh" in text


@pytest.mark.root
def test_this_host_emulates_arm64_as_the_install_script_set_it_up() -> None:
    """scripts/setup-emulation.sh mounted binfmt_misc and enabled qemu-aarch64 with flags PF."""
    if os.geteuid() != 0:
        pytest.skip("binfmt_misc setup needs root")
    if host_platform().architecture != "amd64":
        pytest.skip("the arm64 emulation check is for amd64 hosts")
    assert check_emulation(ARM64, host_platform(), BINFMT_DIR) == "qemu-aarch64"

"""Platform specifiers parsed and normalised as containerd's ``platforms.Parse`` + ``Normalize`` (lamina.oci)."""

from __future__ import annotations

import pytest

from lamina.oci import FormatError, Platform, format_platform, normalize_platform, parse_platform, parse_platforms

AMD64_HOST = Platform("amd64", "linux")
ARM64_HOST = Platform("arm64", "linux")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),  # v8 is arm64's default: dropped
        ("arm64", "linux/arm64"),  # a lone architecture takes the host's OS
        ("arm64/v8", "linux/arm64"),  # ARCH/VARIANT where the OS belongs
        ("amd64/v2", "linux/amd64/v2"),
        ("linux/amd64/v1", "linux/amd64"),  # v1 is amd64's default
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/arm", "linux/arm/v7"),  # arm without a variant is v7
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/aarch64", "linux/arm64"),
        ("LINUX/X86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/i386", "linux/386"),
        ("linux/arm64/9", "linux/arm64/v9"),
        ("linux/riscv64", "linux/riscv64"),
        ("macos/arm64", "darwin/arm64"),
        ("linux", "linux/amd64"),  # a lone OS takes the host's architecture
        (" linux/s390x ", "linux/s390x"),
    ],
)
def test_normalised_like_containerd(text: str, expected: str) -> None:
    assert format_platform(parse_platform(text, AMD64_HOST)) == expected


def test_lone_os_takes_the_host_architecture() -> None:
    assert parse_platform("linux", ARM64_HOST) == Platform("arm64", "linux")


def test_normalize_keeps_arm64_without_variant_in_the_config() -> None:
    platform = normalize_platform(Platform("arm64", "linux", "v8"))
    assert platform.variant is None
    assert platform.dump() == {"architecture": "arm64", "os": "linux"}
    arm = normalize_platform(Platform("arm", "linux")).dump()
    assert arm == {"architecture": "arm", "os": "linux", "variant": "v7"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid platform '': empty"),
        ("linux/amd46", "invalid platform 'linux/amd46': unknown architecture 'amd46'"),
        ("foo", "invalid platform 'foo': unknown operating system or architecture"),
        ("plan/9", "invalid platform 'plan/9': unknown operating system 'plan'"),
        ("linux//v7", "invalid platform 'linux//v7': '' is not a valid component"),
        ("linux/arm/v7/x", "invalid platform 'linux/arm/v7/x': too many parts"),
        ("linux/*", "invalid platform 'linux/*': wildcards are not supported"),
        ("linux/amd 64", "invalid platform 'linux/amd 64': 'amd 64' is not a valid component"),
    ],
)
def test_invalid_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_platform(text, AMD64_HOST)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert "e.g. linux/amd64" in str(info.value)


def test_list_is_normalised_and_deduplicated_in_order() -> None:
    got = parse_platforms("linux/arm64,linux/amd64,linux/arm64/v8,arm64", AMD64_HOST)
    assert [format_platform(p) for p in got] == ["linux/arm64", "linux/amd64"]
    with pytest.raises(FormatError, match="invalid platform ''"):
        parse_platforms("linux/amd64,", AMD64_HOST)

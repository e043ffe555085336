"""seccomp: Docker's profile format -> OCI linux.seccomp, as pure data, and against the real system file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lamina.build.worker import seccomp
from lamina.build.worker.seccomp import (
    NAMESPACE_FLAGS,
    LinuxSeccomp,
    SeccompArg,
    SeccompProfileError,
    SyscallRule,
    convert,
    default_seccomp,
    find_profile,
    gate_namespaces,
)
from lamina.build.worker.security import DEFAULT_CAPABILITIES

SYSTEM_PROFILE = Path("/usr/share/containers/seccomp.json")

PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["not_on_arm"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["both"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["old_only"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
        {"name": "single", "action": "SCMP_ACT_LOG", "comment": "ignored, as by Docker"},
    ],
}


def names(result: LinuxSeccomp) -> list[str]:
    return [name for rule in result.syscalls for name in rule.names]


def test_selection_by_capabilities_arch_and_kernel() -> None:
    plain = convert(PROFILE, capabilities=DEFAULT_CAPABILITIES, arch="amd64", kernel=(6, 1))
    assert plain.default_action == "SCMP_ACT_ERRNO" and plain.default_errno_ret == 1
    assert plain.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert names(plain) == ["read", "write", "personality", "arch_prctl", "not_on_arm", "bpf", "ptrace", "single"]
    bpf = [rule for rule in plain.syscalls if rule.names == ("bpf",)]
    assert bpf == [SyscallRule(("bpf",), "SCMP_ACT_ERRNO", 1)]

    admin = convert(PROFILE, capabilities=(*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"), arch="amd64", kernel=(6, 1))
    assert [r for r in admin.syscalls if r.names == ("bpf",)] == [SyscallRule(("bpf",), "SCMP_ACT_ALLOW")]
    assert "both" not in names(admin)  # includes.caps needs every listed capability
    both = convert(PROFILE, capabilities=("CAP_SYS_ADMIN", "CAP_SYS_PTRACE"), arch="amd64", kernel=(6, 1))
    assert "both" in names(both)

    arm = convert(PROFILE, capabilities=(), arch="arm64", kernel=(4, 4))
    assert arm.architectures == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert "arch_prctl" not in names(arm) and "not_on_arm" not in names(arm)
    assert "ptrace" not in names(arm) and "old_only" in names(arm)  # 4.4 < 4.8; 4.4 < 5.10
    assert convert(PROFILE, capabilities=(), arch="riscv64", kernel=(6, 1)).architectures == ()


def test_args_errno_and_json_shape() -> None:
    result = convert(PROFILE, capabilities=(), arch="amd64", kernel=(6, 1))
    personality = next(rule for rule in result.syscalls if rule.names == ("personality",))
    assert personality.args == (SeccompArg(0, 8, 0, "SCMP_CMP_EQ"),)
    doc = result.to_json()
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == 1
    assert {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]} in doc["syscalls"]  # fmt: skip
    assert {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1} in doc["syscalls"]
    assert {"names": ["single"], "action": "SCMP_ACT_LOG"} in doc["syscalls"]
    listed = convert({**PROFILE, "archMap": None, "architectures": ["SCMP_ARCH_X86_64"]}, capabilities=(),
                     arch="arm64", kernel=(6, 1))  # fmt: skip
    assert listed.architectures == ("SCMP_ARCH_X86_64",)
    hash(result)  # frozen data: usable in a frozen RunSpec and as a cache key


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({}, "no defaultAction and no syscalls"),
        ({"defaultAction": "SCMP_ACT_MAYBE"}, "unknown defaultAction 'SCMP_ACT_MAYBE'"),
        ({**PROFILE, "architectures": ["SCMP_ARCH_X86_64"]}, "both 'architectures' and 'archMap'"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]},
         "sets both 'name' and 'names'"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_OK"}]},
         "unknown action of 'a'"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",
          "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}, "unknown operator 'EQ' for 'a'"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",
          "includes": {"minKernel": 4}}]}, "minKernel 4 must be a string"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock"}, "listenerPath"),
    ],
)  # fmt: skip
def test_invalid_profiles_are_one_line_errors(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(SeccompProfileError, match=message) as info:
        convert(profile, capabilities=(), arch="amd64", kernel=(6, 1))
    assert "\n" not in str(info.value)


def test_namespace_gate_replaces_the_profiles_clone_and_unshare_rules() -> None:
    permissive = LinuxSeccomp(
        "SCMP_ACT_ERRNO",
        38,
        syscalls=(SyscallRule(("read", "clone", "unshare", "clone3"), "SCMP_ACT_ALLOW"),),
    )
    gated = gate_namespaces(permissive, capabilities=DEFAULT_CAPABILITIES, arch="amd64")
    assert gated.syscalls == (
        SyscallRule(("read",), "SCMP_ACT_ALLOW"),
        SyscallRule(("clone",), "SCMP_ACT_ALLOW", None, (SeccompArg(0, NAMESPACE_FLAGS, 0, "SCMP_CMP_MASKED_EQ"),)),
        SyscallRule(("clone3",), "SCMP_ACT_ERRNO", 38),
        SyscallRule(("unshare",), "SCMP_ACT_ERRNO", 1),
    )
    assert NAMESPACE_FLAGS == 0x10000000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000 | 0x02000000 | 0x00020000
    s390 = gate_namespaces(permissive, capabilities=(), arch="s390x")
    assert s390.syscalls[1].args[0].index == 1  # clone's flags are its second argument there
    assert gate_namespaces(permissive, capabilities=("CAP_SYS_ADMIN",), arch="amd64") is permissive


def test_find_profile_order_and_missing_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "usr.json", tmp_path / "etc.json"
    monkeypatch.setattr(seccomp, "SYSTEM_PROFILES", (first, second))
    with pytest.raises(SeccompProfileError, match="install Debian's golang-github-containers-common") as info:
        find_profile(env={})
    assert "LAMINA_SECCOMP_PROFILE=PATH" in str(info.value)
    second.write_text("{}")
    assert find_profile(env={}) == second
    first.write_text("{}")
    assert find_profile(env={}) == first
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    assert find_profile(env={"LAMINA_SECCOMP_PROFILE": str(mine)}) == mine
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert find_profile(other, env={"LAMINA_SECCOMP_PROFILE": str(mine)}) == other
    with pytest.raises(SeccompProfileError, match=r"'/nowhere.json' \(from \$LAMINA_SECCOMP_PROFILE\) not found"):
        find_profile(env={"LAMINA_SECCOMP_PROFILE": "/nowhere.json"})


def test_default_seccomp_is_loaded_once_and_names_a_broken_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(PROFILE))
    first = default_seccomp(good, DEFAULT_CAPABILITIES)
    good.write_text("not json any more")
    assert default_seccomp(good, DEFAULT_CAPABILITIES) is first  # cached: not read per RUN
    assert "unshare" in names(first)  # the namespace gate was applied
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SeccompProfileError, match=r"broken\.json' is not valid JSON"):
        default_seccomp(broken, DEFAULT_CAPABILITIES)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"defaultAction": "SCMP_ACT_NOPE"}')
    with pytest.raises(SeccompProfileError, match=r"^seccomp profile /.*/wrong\.json: unknown defaultAction"):
        default_seccomp(wrong, DEFAULT_CAPABILITIES)


@pytest.fixture
def system_profile() -> dict[str, Any]:
    if not SYSTEM_PROFILE.is_file():
        pytest.skip(f"{SYSTEM_PROFILE} missing (Debian package golang-github-containers-common)")
    return json.loads(SYSTEM_PROFILE.read_text())


def test_the_real_containers_common_profile(system_profile: dict[str, Any]) -> None:
    docker = convert(system_profile, capabilities=DEFAULT_CAPABILITIES, arch="amd64", kernel=(6, 1))
    assert docker.default_action == "SCMP_ACT_ERRNO"
    assert docker.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    allowed = {n for rule in docker.syscalls if rule.action == "SCMP_ACT_ALLOW" and not rule.args for n in rule.names}
    assert {"read", "openat", "execve", "arch_prctl", "chroot"} <= allowed  # chroot: CAP_SYS_CHROOT is held
    assert not {"bpf", "init_module", "acct", "open_by_handle_at", "kexec_load"} & allowed
    refused = {n for rule in docker.syscalls if rule.action == "SCMP_ACT_ERRNO" for n in rule.names}
    assert {"bpf", "init_module", "kexec_load", "open_by_handle_at"} <= refused
    assert "s390_runtime_instr" not in allowed and "breakpoint" not in allowed  # other arches' calls
    personality = [rule.args for rule in docker.syscalls if rule.names == ("personality",)]
    assert SeccompArg(0, 8, 0, "SCMP_CMP_EQ") in [arg for args in personality for arg in args]

    admin = convert(system_profile, capabilities=(*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"), arch="amd64", kernel=(6, 1))
    admin_allowed = {n for rule in admin.syscalls if rule.action == "SCMP_ACT_ALLOW" for n in rule.names}
    assert "bpf" in admin_allowed
    arm = convert(system_profile, capabilities=DEFAULT_CAPABILITIES, arch="arm64", kernel=(6, 1))
    arm_allowed = {n for rule in arm.syscalls if rule.action == "SCMP_ACT_ALLOW" for n in rule.names}
    assert arm.architectures == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert "arch_prctl" not in arm_allowed and "breakpoint" in arm_allowed
    # podman's profile lets anyone create namespaces; the gate puts Docker's rule back.
    assert "unshare" in allowed
    gated = gate_namespaces(docker, capabilities=DEFAULT_CAPABILITIES, arch="amd64")
    assert [r for r in gated.syscalls if "unshare" in r.names] == [SyscallRule(("unshare",), "SCMP_ACT_ERRNO", 1)]
    json.dumps(gated.to_json())

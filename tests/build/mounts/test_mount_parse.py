"""``RUN --mount`` parsing: BuildKit's fields, defaults and errors (commands_runmount.go, convert_runmount.go,
convert_secrets.go, convert_ssh.go), through the real Dockerfile frontend."""

from __future__ import annotations

import pytest

from lamina.build.dockerfile import DockerfileError, convert
from lamina.build.dockerfile.runmount import ram_in_bytes
from lamina.build.mounts import BindMount, CacheMount, MountFrom, SecretMount, SshMount, TmpfsMount
from lamina.build.ops import RunStep
from lamina.oci import Platform

AMD64 = Platform("amd64", "linux")


def run_step(dockerfile: str, build_args: dict[str, str] | None = None) -> RunStep:
    graph = convert(dockerfile, build_args=build_args or {}, target=None, platform=AMD64, resolve_base=None)
    steps = [s for s in graph.stages[-1].steps if isinstance(s, RunStep)]
    return steps[-1]


def mounts(flags: str, workdir: str = "/") -> tuple[object, ...]:
    return run_step(f"FROM scratch AS other\nFROM scratch\nWORKDIR {workdir}\nRUN {flags} true\n").mounts


@pytest.mark.parametrize(("flags", "expected"), [
    ("--mount=type=cache,target=/root/.cache",
     CacheMount("/root/.cache", id="/root/.cache")),
    ("--mount=type=cache,dst=.cache/pip,sharing=LOCKED,ro",
     CacheMount("/app/.cache/pip", id=".cache/pip", sharing="locked", readonly=True)),
    ("--mount=type=cache,target=/c,id=shared-id,sharing=private,mode=0750,uid=1000,gid=1000",
     CacheMount("/c", id="shared-id", sharing="private", mode=0o750, uid=1000, gid=1000)),
    ("--mount=type=cache,target=/c,from=other,source=/seed",
     CacheMount("/c", id="/c", source="/seed", origin=MountFrom(stage=0))),
    ("--mount=target=/src", BindMount("/src")),
    ("--mount=type=bind,source=requirements.txt,target=requirements.txt",
     BindMount("/app/requirements.txt", source="/requirements.txt")),
    ("--mount=type=bind,from=other,src=/stuff,destination=/mnt/o,rw",
     BindMount("/mnt/o", source="/stuff", origin=MountFrom(stage=0), readonly=False)),
    ("--mount=type=bind,from=1,target=/x,readwrite=true", None),  # stage 1 is the current one: refused below
    ("--mount=type=bind,from=busybox:latest,target=/bb",
     BindMount("/bb", origin=MountFrom(image="busybox:latest"))),
    ("--mount=type=tmpfs,target=/t,size=1m", TmpfsMount("/t", size=1 << 20)),
    ("--mount=type=tmpfs,target=/t,ro", TmpfsMount("/t", readonly=True)),
    ("--mount=type=secret,id=token", SecretMount("token", "/run/secrets/token")),
    ("--mount=type=secret,target=/custom/tok", SecretMount("tok", "/custom/tok")),
    ("--mount=type=secret,source=npmrc,target=/root/.npmrc,required,mode=0440,uid=5",
     SecretMount("npmrc", "/root/.npmrc", required=True, mode=0o440, uid=5)),
    ("--mount=type=secret,id=token,env=TOKEN", SecretMount("token", None, env="TOKEN")),
    ("--mount=type=secret,id=token,env=TOKEN,target=/t",
     SecretMount("token", "/t", env="TOKEN")),
    ("--mount=type=ssh", SshMount("default", "/run/buildkit/ssh_agent.0")),
    ("--mount=type=ssh,id=gh,required=true,mode=0666,uid=1,gid=2",
     SshMount("gh", "/run/buildkit/ssh_agent.0", required=True, mode=0o666, uid=1, gid=2)),
])
def test_mount_values_and_defaults(flags: str, expected: object) -> None:
    if expected is None:
        with pytest.raises(DockerfileError, match="needs to be defined before the current stage"):
            mounts(flags, workdir="/app")
        return
    assert mounts(flags, workdir="/app") == (expected,)


def test_variables_are_expanded_but_not_in_from() -> None:
    step = run_step("FROM scratch\nARG DIR=/cache\nRUN --mount=type=cache,target=${DIR}/x,id=$DIR true\n",
                    {"DIR": "/var/c"})
    assert step.mounts == (CacheMount("/var/c/x", id="/var/c"),)
    with pytest.raises(DockerfileError, match="'from' doesn't support variable expansion"):
        mounts("--mount=type=bind,from=$STAGE,target=/x")


def test_ssh_sockets_are_numbered_and_set_ssh_auth_sock() -> None:
    step = run_step("FROM scratch\nRUN --mount=type=ssh --mount=type=ssh,id=b --mount=type=ssh,id=c,target=/s true\n")
    assert [m.target for m in step.mounts] == [
        "/run/buildkit/ssh_agent.0", "/run/buildkit/ssh_agent.1", "/s",
    ]
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in step.env
    own = run_step("FROM scratch\nENV SSH_AUTH_SOCK=/mine\nRUN --mount=type=ssh true\n")
    assert "SSH_AUTH_SOCK=/mine" in own.env and "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" not in own.env


def test_history_omits_the_mount_flags() -> None:
    step = run_step("FROM scratch\nRUN --mount=type=cache,target=/c echo hi\n")
    assert step.created_by == "RUN /bin/sh -c echo hi # buildkit"


@pytest.mark.parametrize(("flags", "message"), [
    ("--mount=type=cache", 'invalid mount target "/"'),
    ("--mount=type=bind,target=/", 'invalid mount target "/"'),
    ("--mount=type=volume,target=/x", "unsupported mount type 'volume'"),
    ("--mount=type=bind,target=/x,mode=0700", 'mode not allowed for "bind" type mounts'),
    ("--mount=type=tmpfs,target=/x,uid=1", 'uid not allowed for "tmpfs" type mounts'),
    ("--mount=type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
    ("--mount=type=cache,target=/x,size=1m", "unexpected key 'size' for mount type 'cache'"),
    ("--mount=type=cache,target=/x,env=A", "unexpected key 'env' for mount type 'cache'"),
    ("--mount=type=cache,target=/x,sharing=sometimes", "unsupported sharing value 'sometimes'"),
    ("--mount=type=bind,target=/x,sharing=shared", "invalid cache sharing set for bind mount"),
    ("--mount=type=secret,id=a,from=other", "secret mount should not have a from"),
    ("--mount=type=secret,id=a,sharing=locked", "secret mount should not define sharing"),
    ("--mount=type=secret", "invalid secret mount. one of source, target required"),
    ("--mount=type=secret,id=a,source=b", "both source and id can't be set"),
    ("--mount=type=ssh,source=/x", "ssh does not support source"),
    ("--mount=type=cache,target=/x,mode=9", "invalid value 9 for mode"),
    ("--mount=type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
    ("--mount=type=bind,target=/x,ro=maybe", "invalid value for ro: maybe"),
    ("--mount=type=tmpfs,target=/x,size=lots", "invalid value for size: lots"),
    ("--mount=type=bind,target=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("--mount=type=bind,target=/x,tagret=/y", "unexpected key 'tagret' in 'tagret=/y' (did you mean target?)"),
    ("--mount=type=tmpfs,target=/x,from=other", "'from' has no meaning for a tmpfs mount"),
    ("--mount=type=bind,target=/x,id=a", "'id' has no meaning for a bind mount"),
    ("--mount=type=bind,target=/x,from=no/such:st@ge", "no such stage"),
    ("--mount=type=cache,target=/x --mount=type=tmpfs,target=/x", "two mounts on the same target '/x'"),
])
def test_errors_are_one_line_naming_line_and_value(flags: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        mounts(flags)
    text = str(info.value)
    assert text.startswith("Dockerfile:4: RUN ") and message in text and "\n" not in text, text


def test_mount_from_a_later_stage_pulls_it_into_the_graph() -> None:
    dockerfile = "FROM scratch AS tools\nRUN true\nFROM scratch AS unused\nFROM scratch\n" \
                 "RUN --mount=type=bind,from=tools,target=/t true\n"
    graph = convert(dockerfile, build_args={}, target=None, platform=AMD64, resolve_base=None)
    assert [s.name for s in graph.stages] == ["tools", None]


@pytest.mark.parametrize(("text", "size"), [
    ("512", 512), ("64k", 64 << 10), ("1m", 1 << 20), ("1M", 1 << 20), ("1.5g", 3 << 29), ("2GiB", 2 << 30),
    ("1 kb", 1024),
])
def test_ram_in_bytes_as_go_units(text: str, size: int) -> None:
    assert ram_in_bytes(text) == size

"""``--secret`` and ``--ssh``: buildx's flag forms, reading values only when asked, the per-RUN secret files
and ssh sockets (mode, owner, a real ssh-agent behind the forwarding socket), and their cleanup."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import struct
import subprocess
from contextlib import nullcontext
from pathlib import Path

import pytest

from lamina.build.cachemounts import CacheMountStore
from lamina.build.context import SourceTree
from lamina.build.mountprep import MountError, RunMounts
from lamina.build.mounts import SecretMount, SshMount
from lamina.build.ops import RunStep
from lamina.build.secrets import BuildSecrets, SecretError, SecretSpec, SshAgents, SshSpec, parse_secret, parse_ssh


@pytest.mark.parametrize(("text", "spec"), [
    ("id=tok,src=/run/t", SecretSpec("tok", file="/run/t")),
    ("id=tok,source=./t", SecretSpec("tok", file="./t")),
    ("id=tok,env=MY_TOKEN", SecretSpec("tok", env="MY_TOKEN")),
    ("type=env,id=tok,src=MY_TOKEN", SecretSpec("tok", env="MY_TOKEN")),
    ("type=env,id=GH_TOKEN", SecretSpec("GH_TOKEN", env="GH_TOKEN")),
    ("type=file,id=npmrc", SecretSpec("npmrc", file="npmrc")),
    ("id=bare", SecretSpec("bare")),
])
def test_secret_flag_forms(text: str, spec: SecretSpec) -> None:
    assert parse_secret(text) == spec


@pytest.mark.parametrize(("text", "message"), [
    ("src=/x", "the secret needs an id"),
    ("id=a,type=socket", "unsupported secret type 'socket'"),
    ("id=a,path=/x", "unexpected key 'path'"),
    ("id=a,src", "invalid field 'src' must be a key=value pair"),
    ("id=a,src=/x,env=B", "either src=FILE or env=VAR"),
])
def test_secret_flag_errors(text: str, message: str) -> None:
    with pytest.raises(SecretError, match=message):
        parse_secret(text)


def test_ssh_flag_forms() -> None:
    assert parse_ssh("default") == SshSpec("default")
    assert parse_ssh("gh=/k1,/k2") == SshSpec("gh", ("/k1", "/k2"))
    with pytest.raises(SecretError, match="expected ID"):
        parse_ssh("=x")


def test_secret_values_are_read_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_bytes(b"from-file")
    monkeypatch.setenv("LAMINA_TEST_TOKEN", "from-env")
    monkeypatch.setenv("bare", "bare-env")
    secrets = BuildSecrets([
        SecretSpec("f", file=str(tmp_path / "file")),
        SecretSpec("e", env="LAMINA_TEST_TOKEN"),
        SecretSpec("bare"),
        SecretSpec("unset", env="LAMINA_TEST_UNSET"),
        SecretSpec("gone", file=str(tmp_path / "missing")),
    ])
    assert secrets.read("f") == b"from-file" and secrets.read("e") == b"from-env"
    assert secrets.read("bare") == b"bare-env"  # a bare id: its variable if set (else the file of that name)
    assert secrets.read("unset") is None and secrets.read("never-given") is None
    with pytest.raises(SecretError, match=r"--secret id=gone: cannot read .*missing: No such file or directory"):
        secrets.read("gone")


def _run_mounts(tmp_path: Path, step: RunStep, secrets: BuildSecrets, ssh: SshAgents) -> RunMounts:
    (tmp_path / "ctx").mkdir(exist_ok=True)
    (tmp_path / "scratch").mkdir(exist_ok=True)
    return RunMounts(step, None, view=lambda lowers: nullcontext(tmp_path), store=lambda: CacheMountStore(tmp_path),
                     context=SourceTree(tmp_path / "ctx"), named_contexts={}, secrets=secrets, ssh=ssh,
                     scratch=tmp_path / "scratch")


def test_secret_files_env_and_optional_absence(tmp_path: Path) -> None:
    (tmp_path / "tok").write_bytes(b"s3cr3t")
    step = RunStep(argv=("true",), env=(), user="", workdir="/", mounts=(
        SecretMount("tok", "/custom/tok", env="TOK", mode=0o440, uid=5, gid=6),
        SecretMount("absent", "/run/secrets/absent"),
    ))

    async def main() -> Path:
        async with _run_mounts(tmp_path, step, BuildSecrets([SecretSpec("tok", file=str(tmp_path / "tok"))]),
                               SshAgents()) as mounts:
            [prepared] = mounts.prepared  # the optional secret that is not there is left out
            path = Path(prepared.source)
            st = os.stat(path)
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 5, 6)
            assert path.read_bytes() == b"s3cr3t" and prepared.target == "/custom/tok" and prepared.readonly
            assert mounts.env == {"TOK": "s3cr3t"}
            assert not path.is_relative_to(tmp_path)  # never in the state dir (here: scratch's parent)
            return path

    path = asyncio.run(main())
    assert not path.exists() and not path.parent.exists()


def test_required_secret_missing_is_one_clear_line(tmp_path: Path) -> None:
    step = RunStep(argv=("true",), env=(), user="", workdir="/",
                   mounts=(SecretMount("npmrc", "/root/.npmrc", required=True),))

    async def main() -> None:
        async with _run_mounts(tmp_path, step, BuildSecrets(), SshAgents()):
            pass

    with pytest.raises(MountError) as info:
        asyncio.run(main())
    assert str(info.value) == (
        "--mount=type=secret,id=npmrc,target=/root/.npmrc: secret 'npmrc' is required but the build has no such "
        "secret: pass --secret id=npmrc,src=FILE (or env=VAR)"
    )


async def _identities(sock: str) -> int:
    """Ask an ssh agent at ``sock`` how many keys it holds (SSH2_AGENTC_REQUEST_IDENTITIES)."""
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(struct.pack(">IB", 1, 11))
    await writer.drain()
    length = struct.unpack(">I", await reader.readexactly(4))[0]
    body = await reader.readexactly(length)
    writer.close()
    assert body[0] == 12  # SSH2_AGENT_IDENTITIES_ANSWER
    return int(struct.unpack(">I", body[1:5])[0])


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs openssh-client (ssh-keygen, ssh-agent)")
def test_ssh_socket_forwards_to_a_private_agent_loaded_from_a_key_file(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o644)  # ssh-add would refuse a readable key file; the key goes to the agent on stdin
    step = RunStep(argv=("true",), env=(), user="", workdir="/",
                   mounts=(SshMount("default", "/run/buildkit/ssh_agent.0", mode=0o600, uid=1000, gid=1000),))
    agents = SshAgents([SshSpec("default", (str(key),))])

    async def main() -> tuple[Path, str]:
        async with _run_mounts(tmp_path, step, BuildSecrets(), agents) as mounts:
            [prepared] = mounts.prepared
            st = os.stat(prepared.source)
            assert stat.S_ISSOCK(st.st_mode)
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1000, 1000)
            assert await _identities(prepared.source) == 1
            assert await _identities(prepared.source) == 1  # every connection is forwarded
            agent = await agents.socket("default")
            assert agent is not None
        assert not Path(prepared.source).exists()
        await agents.aclose()
        return Path(prepared.source), agent

    _, agent = asyncio.run(main())
    assert not Path(agent).exists()  # the private agent and its directory are gone with the build


def test_ssh_required_without_agent_and_default_without_ssh_auth_sock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = RunStep(argv=("true",), env=(), user="", workdir="/",
                   mounts=(SshMount("gh", "/run/buildkit/ssh_agent.0", required=True),))

    async def enter(agents: SshAgents) -> None:
        async with _run_mounts(tmp_path, step, BuildSecrets(), agents):
            pass

    with pytest.raises(MountError, match=r"ssh agent 'gh' is required but the build has none: pass --ssh gh"):
        asyncio.run(enter(SshAgents()))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(MountError, match="--ssh gh: SSH_AUTH_SOCK is not set"):
        asyncio.run(enter(SshAgents([SshSpec("gh")])))

"""Real clients against a real ``lamina registry serve`` with auth: skopeo login + copy (containers/image,
the token flow of docker and podman), podman and docker login, and lamina's own client reading
``~/.docker/config.json``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import bcrypt
import pytest
from opstools import PASSWORDS

from helpers.images import image_manifest, layer_from_files, write_layout
from lamina.client import CredentialStore, RegistryClient
from lamina.oci import digest_of

pytestmark = [pytest.mark.interop]


def _config(tmp_path: Path) -> str:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for u, p in PASSWORDS.items()))
    return f"""
[auth]
htpasswd = "{htpasswd}"
[[auth.rules]]
repositories = ["apps/**"]
users = ["alice"]
actions = ["pull", "push"]
[[auth.rules]]
repositories = ["apps/**"]
users = ["bob"]
actions = ["pull"]
"""


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


def test_skopeo_login_push_and_pull_through_the_token_flow(make_lamina_registry, skopeo_bin: str,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    server = make_lamina_registry(config=_config(tmp_path))
    authfile = tmp_path / "auth.json"
    bad = _skopeo("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice", "-p", "nope", server.host)
    assert bad.returncode != 0
    good = _skopeo("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice", "-p",
                   PASSWORDS["alice"], server.host)
    assert good.returncode == 0, good.stderr
    image = image_manifest([layer_from_files({"hello.txt": b"hello\n"})])
    with tempfile.TemporaryDirectory() as tmp:
        layout = write_layout(Path(tmp) / "layout", image.manifest, [image.config, *image.layers])
        pushed = _skopeo("copy", "--dest-tls-verify=false", "--dest-authfile", str(authfile),
                         f"oci:{layout}:latest", f"docker://{server.host}/apps/hello:v1")
        assert pushed.returncode == 0, pushed.stderr
        refused = _skopeo("copy", "--dest-tls-verify=false", "--dest-authfile", str(authfile),
                          f"oci:{layout}:latest", f"docker://{server.host}/other/hello:v1")
        error = refused.stderr.lower()
        assert refused.returncode != 0 and ("403" in error or "denied" in error)
    tags = _skopeo("list-tags", "--tls-verify=false", "--authfile", str(authfile), f"docker://{server.host}/apps/hello")
    assert tags.returncode == 0 and json.loads(tags.stdout)["Tags"] == ["v1"]
    anonymous = _skopeo("list-tags", "--tls-verify=false", f"docker://{server.host}/apps/hello")
    assert anonymous.returncode != 0


async def test_lamina_client_uses_docker_config_credentials(make_lamina_registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_lamina_registry(config=_config(tmp_path))

    def store(user: str) -> CredentialStore:
        auth = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
        return CredentialStore(config={"auths": {server.host: {"auth": auth}}})

    data = b"cache layer pushed by a CI runner"
    async with RegistryClient(server.host, credentials=store("alice")) as client:
        await client.push_blob("apps/cache", digest_of(data), len(data), data)
    dest = tmp_path / "blob"
    async with RegistryClient(server.host, credentials=store("bob")) as client:
        await client.download_blob("apps/cache", digest_of(data), dest, size=len(data))
        assert dest.read_bytes() == data
        with pytest.raises(Exception) as refused:
            await client.push_blob("apps/cache", digest_of(b"bob's"), 5, b"bob's")
        assert "denied" in str(refused.value).lower() or "403" in str(refused.value)


@pytest.mark.parametrize("tool", ["podman", "docker"])
def test_podman_and_docker_login_then_lamina_uses_what_they_wrote(  # type: ignore[no-untyped-def]
    make_lamina_registry, tmp_path: Path, tool: str
) -> None:
    """`podman login` / `docker login` (the CLI alone: it logs in client-side when no engine runs) check the
    password against lamina and store it; lamina's client then pushes with exactly that file."""
    binary = shutil.which(tool)
    if binary is None:
        pytest.skip(f"{tool} is not installed (scripts/install-system-deps.sh installs podman; docker's CLI ships "
                    "with this kind of machine)")
    server = make_lamina_registry(config=_config(tmp_path))
    config_dir = tmp_path / f"{tool}-config"
    config_dir.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir), "REGISTRY_AUTH_FILE": str(config_dir / "config.json")}
    flags = ["--tls-verify=false"] if tool == "podman" else []
    if tool == "docker":
        # The docker CLI picks `pass` as its default credsStore whenever `pass` and docker-credential-pass are
        # on PATH (both are, for lamina's own helper tests): give it a PATH holding only itself, so it writes
        # the plain `auths` entry this test is about.
        only_docker = tmp_path / "docker-bin"
        only_docker.mkdir()
        (only_docker / "docker").symlink_to(binary)
        env["PATH"] = str(only_docker)

    def login(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, "login", *flags, "-u", "alice", "--password-stdin", server.host],
                              input=password, capture_output=True, text=True, timeout=60, env=env)

    assert login("wrong password").returncode != 0
    good = login(PASSWORDS["alice"])
    assert good.returncode == 0, good.stderr
    written = json.loads((config_dir / "config.json").read_text())
    assert server.host in written["auths"]

    data = f"layer pushed after {tool} login".encode()

    async def push() -> None:
        store = CredentialStore(config_dir / "config.json")
        async with RegistryClient(server.host, credentials=store) as client:
            await client.push_blob("apps/logged-in", digest_of(data), len(data), data)
            assert await client.head_blob("apps/logged-in", digest_of(data)) == len(data)

    asyncio.run(push())

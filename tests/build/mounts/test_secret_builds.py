"""Secrets and ssh in real builds: the RUN sees them (file, env, mode, owner, socket), and a secret's bytes
are in no layer, config, history, key, progress line or state file — checked by searching every OCI blob,
stderr and every file of the state directory for them. Its value is not part of the cache key either."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mount_helpers import cached_steps, oci_blobs

from helpers.buildcli import build, make_context
from helpers.images import busybox_image
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="secrets/busybox", rootfs=busybox_rootfs).reference


SECRETS = """\
FROM {base}
RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-len
RUN --mount=type=secret,id=token,env=TOKEN printf '%s' "$TOKEN" | wc -c > /env-len
RUN --mount=type=secret,id=token,target=/custom/tok,mode=0440,uid=5 busybox stat -c '%a %u %g' /custom/tok > /stat
RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /optional
"""


def _files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path))
    return found


def test_secret_reaches_the_run_and_nothing_else(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    value = b"zq9-" + os.urandom(8).hex().encode()  # 20 bytes no file of the image could hold by chance
    secret = tmp_path / "token.txt"
    secret.write_bytes(value)
    context = make_context(tmp_path / "ctx", SECRETS.format(base=base))
    root, oci, out = tmp_path / "state", tmp_path / "image.tar", tmp_path / "out"
    rc, _, err = build(capsys, context, root, "--secret", f"id=token,src={secret}",
                       "--output", f"type=oci,dest={oci}")
    assert rc == 0, err
    blobs = oci_blobs(oci)
    assert [name for name, data in blobs.items() if value in data] == []  # layers, config, history, manifest
    assert value not in err.encode()
    assert _files_containing(root, value) == []
    assert not [p for p in Path("/dev/shm").glob("lamina-*") if _files_containing(p, value)]

    secret.write_bytes(b"another-value-entirely")  # the value is not part of the key: every step hits
    rc, _, err = build(capsys, context, root, "--secret", f"id=token,src={secret}",
                       "--output", f"type=local,dest={out}")
    assert rc == 0 and all(cached_steps(err).values()), err
    assert (out / "secret-len").read_text().strip() == "20" and (out / "env-len").read_text().strip() == "20"
    assert (out / "stat").read_text() == "440 5 0\n" and (out / "optional").read_text() == "skipped\n"
    assert not (out / "run" / "secrets").exists() and not (out / "custom").exists()

    monkeypatch.setenv("LAMINA_TEST_SECRET", "from-the-environment")
    rc, _, err = build(capsys, context, root, "--no-cache", "--secret", "id=token,env=LAMINA_TEST_SECRET",
                       "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "secret-len").read_text().strip() == str(len("from-the-environment"))


def test_required_secret_missing_fails_in_one_line(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = make_context(tmp_path / "ctx", f"FROM {base}\nRUN --mount=type=secret,id=npmrc,required true\n")
    rc, _, err = build(capsys, context, tmp_path / "state")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("error: Dockerfile:2: ")
    assert "secret 'npmrc' is required but the build has no such secret: pass --secret id=npmrc,src=FILE" in errors[0]


def test_ssh_socket_in_the_run(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    dockerfile = (
        f"FROM {base}\n"
        "RUN --mount=type=ssh,uid=1000 busybox stat -c '%a %u %F' $SSH_AUTH_SOCK > /sock.txt "
        "&& echo $SSH_AUTH_SOCK > /env.txt\n"
    )
    context = make_context(tmp_path / "ctx", dockerfile)
    out = tmp_path / "out"
    rc, _, err = build(capsys, context, tmp_path / "state", "--ssh", f"default={key}",
                       "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "sock.txt").read_text() == "600 1000 socket\n"
    assert (out / "env.txt").read_text() == "/run/buildkit/ssh_agent.0\n"
    assert not (out / "run" / "buildkit").exists()

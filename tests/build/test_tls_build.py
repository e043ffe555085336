"""``lamina build --push`` to lamina's registry over HTTPS with a private CA, found through docker's
``certs.d`` layout (``$LAMINA_CERTS_D`` here, so the test writes nothing under /etc), with ``[auth]``
on (the token realm is HTTPS as well): a base image pushed with a registry cache, a second build pulling
it as its ``FROM``, a third one served from the cache alone, and skopeo reading the result through
the same CA directory. Without the CA the build fails in one line saying where to put it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import bcrypt
import pytest

from helpers.images import skopeo
from helpers.tlscerts import CertAuthority
from helpers.tlsregistry import start_lamina_tls
from lamina.cli import main
from lamina.client.tls import CERTS_D_ENV

pytestmark = [pytest.mark.root, pytest.mark.interop]

if os.geteuid() != 0:
    pytest.skip("needs root (the builder's overlay mounts)", allow_module_level=True)

USER, PASSWORD = "ci", "s3cret"


def _build(capsys: pytest.CaptureFixture[str], root: Path, context: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["build", "--progress", "plain", "--root", str(root), *args, str(context)])
    out, err = capsys.readouterr()
    return rc, out.strip(), err


def test_build_pushes_and_pulls_through_certs_d(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, skopeo_bin: str
) -> None:
    ca = CertAuthority(tmp_path / "ca")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    config = (f'[auth]\nhtpasswd = "{htpasswd}"\n'
              f'[[auth.rules]]\nrepositories = ["**"]\nusers = ["{USER}"]\nactions = ["pull", "push"]\n')
    server = start_lamina_tls(tmp_path / "reg", ca, ca.issue("server"), config=config)
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    host = server.host
    base_ctx, app_ctx = tmp_path / "base", tmp_path / "app"
    for ctx, name in ((base_ctx, "a.txt"), (app_ctx, "b.txt")):
        ctx.mkdir()
        (ctx / name).write_text(f"{name} over TLS\n")
    (base_ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    (app_ctx / "Dockerfile").write_text(f"FROM {host}/tls/base:1\nCOPY b.txt /b.txt\n")
    cache = f"type=registry,ref={host}/tls/cache:1,mode=max,image-manifest=true"
    with server:
        (tmp_path / "no-ca" / host).mkdir(parents=True)  # HTTPS for this loopback host, but no CA to trust
        monkeypatch.setenv(CERTS_D_ENV, str(tmp_path / "no-ca"))
        rc, _, err = _build(capsys, tmp_path / "s0", base_ctx, "-t", f"{host}/tls/base:1", "--push")
        last = err.strip().splitlines()[-1]
        assert rc == 1 and last.startswith("error:") and "TLS_ERROR" in last, err
        assert f"/etc/docker/certs.d/{host}/ca.crt ($LAMINA_CERTS_D replaces" in last

        monkeypatch.setenv(CERTS_D_ENV, str(server.certs_d))
        rc, base_digest, err = _build(capsys, tmp_path / "s1", base_ctx, "-t", f"{host}/tls/base:1", "--push",
                                      "--cache-to", cache)
        assert rc == 0, err
        rc, app_digest, err = _build(capsys, tmp_path / "s2", app_ctx, "-t", f"{host}/tls/app:1", "--push")
        assert rc == 0, err
        rc, again, err = _build(capsys, tmp_path / "s3", base_ctx, "-t", f"{host}/tls/base:2", "--push",
                                "--cache-from", f"type=registry,ref={host}/tls/cache:1")
        assert rc == 0 and again == base_digest, err
        assert "CACHED" in err

        creds = ("--cert-dir", str(server.cert_dir), "--creds", f"{USER}:{PASSWORD}")
        manifest = json.loads(skopeo("inspect", "--raw", *creds, f"docker://{host}/tls/app:1").stdout)
        assert len(manifest["layers"]) == 2
        digest = skopeo("inspect", "--format", "{{.Digest}}", *creds, f"docker://{host}/tls/app:1").stdout.strip()
        assert digest == app_digest

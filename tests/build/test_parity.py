"""Parity with Docker's documented behaviour: Dockerfiles whose expected root filesystem and config are
written down here (from Docker's Dockerfile reference), built for real and inspected.

Each case builds once with two outputs — the root filesystem (``type=local``) and the image
(``type=oci`` tarball, for the config and the layer tars) — and checks files, modes, owners,
whiteouts and config fields.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.images import busybox_image
from helpers.registries import RegistryProcess
from lamina.cli import main

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="parity/busybox", rootfs=busybox_rootfs).reference


@dataclass
class Built:
    rootfs: Path
    config: dict[str, Any]
    layers: list[dict[str, tarfile.TarInfo]]
    err: str


def _build(tmp_path: Path, capsys: pytest.CaptureFixture[str], dockerfile: str, files: dict[str, str],
           *args: str) -> Built:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    rootfs, tar = tmp_path / "rootfs", tmp_path / "image.tar"
    rc = main(["build", "--progress", "plain", "--root", str(tmp_path / "state"), *args,
               "--output", f"type=local,dest={rootfs}", "--output", f"type=oci,dest={tar}", str(context)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    digest = out.strip().split(":")[1]
    with tarfile.open(tar) as outer:
        def blob(hex_digest: str) -> bytes:
            return outer.extractfile(f"blobs/sha256/{hex_digest}").read()  # type: ignore[union-attr]

        manifest = json.loads(blob(digest))
        config = json.loads(blob(manifest["config"]["digest"].split(":")[1]))
        layers = []
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"].split(":")[1]))) as inner:
                layers.append({m.name: m for m in inner.getmembers()})
    return Built(rootfs, config, layers, err)


def test_copy_directory_semantics(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = f"""\
FROM {base}
COPY dir /contents/
COPY dir/sub/x.txt /renamed.txt
COPY a.txt b.txt /multi/
COPY *.txt /globbed/
COPY a.txt /deep/new/parent/
"""
    files = {"dir/top.txt": "top\n", "dir/sub/x.txt": "x\n", "a.txt": "a\n", "b.txt": "b\n"}
    built = _build(tmp_path, capsys, dockerfile, files)
    root = built.rootfs
    assert (root / "contents" / "top.txt").read_text() == "top\n"  # a directory copies its contents
    assert (root / "contents" / "sub" / "x.txt").is_file() and not (root / "contents" / "dir").exists()
    assert (root / "renamed.txt").read_text() == "x\n"
    assert sorted(p.name for p in (root / "multi").iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in (root / "globbed").iterdir()) == ["a.txt", "b.txt"]
    assert (root / "deep" / "new" / "parent" / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (root / "deep" / "new").stat().st_uid == 0


def test_arg_env_scoping_and_workdir(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = f"""\
ARG TAGGED=latest
FROM {base}
ARG TAGGED
ARG ONLY_ARG=arg-default
ARG BOTH=from-arg
ENV BOTH=from-env
WORKDIR /a
WORKDIR b
RUN echo "$TAGGED $ONLY_ARG $BOTH $(pwd)" > /result.txt
"""
    built = _build(tmp_path, capsys, dockerfile, {}, "--build-arg", "ONLY_ARG=given", "--build-arg", "BOTH=cli")
    assert (built.rootfs / "result.txt").read_text() == "latest given from-env /a/b\n"
    env = built.config["config"]["Env"]
    assert "BOTH=from-env" in env and not any(e.startswith("ONLY_ARG=") for e in env)  # ARGs are not kept
    assert built.config["config"]["WorkingDir"] == "/a/b"


def test_user_resolves_from_the_image(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = f"""\
FROM {base}
USER app
WORKDIR /home/app/work
RUN id -u > /home/app/work/uid.txt && id -g >> /home/app/work/uid.txt
COPY --chown=app:app --chmod=700 a.txt /home/app/owned.txt
USER 0:0
"""
    built = _build(tmp_path, capsys, dockerfile, {"a.txt": "a\n"})
    work = built.rootfs / "home" / "app" / "work"
    assert (work / "uid.txt").read_text() == "1000\n1000\n"
    assert (work.stat().st_uid, work.stat().st_gid) == (1000, 1000)  # WORKDIR creates it for the USER
    owned = (built.rootfs / "home" / "app" / "owned.txt").stat()
    assert (owned.st_uid, owned.st_gid, owned.st_mode & 0o777) == (1000, 1000, 0o700)
    assert built.config["config"]["User"] == "0:0"


def test_deletions_across_layers_are_whiteouts(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile = f"""\
FROM {base}
RUN mkdir -p /data/keep /data/gone && echo 1 > /data/keep/f && echo 2 > /data/gone/f && echo 3 > /data/file
RUN rm -rf /data/gone /data/file
"""
    built = _build(tmp_path, capsys, dockerfile, {})
    assert sorted(p.name for p in (built.rootfs / "data").iterdir()) == ["keep"]
    last = built.layers[-1]
    assert "data/.wh.gone" in last and "data/.wh.file" in last
    assert not any(name.startswith("data/keep/") for name in last)


def test_dockerignore_with_exceptions(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {
        ".dockerignore": "**/*.log\n!keep.log\nsecret/\n",
        "app.py": "print()\n",
        "debug.log": "no\n",
        "keep.log": "yes\n",
        "nested/deep/x.log": "no\n",
        "nested/deep/x.py": "ok\n",
        "secret/key": "no\n",
    }
    built = _build(tmp_path, capsys, f"FROM {base}\nCOPY . /ctx/\n", files)
    found = sorted(str(p.relative_to(built.rootfs / "ctx")) for p in (built.rootfs / "ctx").rglob("*") if p.is_file())
    assert found == [".dockerignore", "Dockerfile", "app.py", "keep.log", "nested/deep/x.py"]


def test_config_fields(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = f"""\
FROM {base}
LABEL org.example.name="demo app" version=1
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s CMD ["true"]
ONBUILD RUN echo triggered
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""
    built = _build(tmp_path, capsys, dockerfile, {}, "--label", "extra=1")
    config = built.config["config"]
    assert config["Labels"] == {"org.example.name": "demo app", "version": "1", "extra": "1"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"]["Test"] == ["CMD", "true"]
    assert config["Healthcheck"]["Interval"] == 30_000_000_000
    assert config["OnBuild"] == ["RUN echo triggered"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"] and config["Cmd"] == ["echo hi"]
    assert built.config["architecture"] == "amd64" and built.config["os"] == "linux"
    assert all(h.get("empty_layer") for h in built.config["history"][1:])
    assert len(built.config["rootfs"]["diff_ids"]) == 1  # only the base layer



def test_heredocs_add_archive_and_copy_from_an_image(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ctx").mkdir()
    with tarfile.open(tmp_path / "ctx" / "bundle.tar.gz", "w:gz") as tar:
        data = b"from the archive\n"
        info = tarfile.TarInfo("inner/file.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    dockerfile = f"""\
FROM {base}
MAINTAINER someone@example.com
RUN <<EOF
echo "heredoc line one" > /heredoc.txt
echo "heredoc line two" >> /heredoc.txt
EOF
RUN <<EOF
#!/bin/sh
echo "script via $0" > /script.txt
EOF
COPY <<EOF /copied-heredoc.txt
inline content
EOF
ADD bundle.tar.gz /unpacked/
COPY --from={base} /etc/passwd /from-image-passwd
"""
    built = _build(tmp_path, capsys, dockerfile, {})
    root = built.rootfs
    assert (root / "heredoc.txt").read_text() == "heredoc line one\nheredoc line two\n"
    assert (root / "script.txt").read_text().startswith("script via /dev/pipes/")
    assert not (root / "dev" / "pipes").exists()  # the script is bound for that RUN only
    assert (root / "copied-heredoc.txt").read_text() == "inline content\n"
    assert (root / "unpacked" / "inner" / "file.txt").read_text() == "from the archive\n"
    assert "app:x:1000:1000" in (root / "from-image-passwd").read_text()
    assert built.config["author"] == "someone@example.com"

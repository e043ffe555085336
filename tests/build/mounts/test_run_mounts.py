"""RUN --mount end to end: real builds against a lamina registry, RUN in runc on overlayfs.

Cache mounts persist between builds, are shared by id and stay out of layers and keys; binds read the
context as BuildKit sees it (.dockerignore), a stage or an image, and ``rw`` writes vanish; tmpfs and the
cache mount's permissions are what the RUN sees; no mountpoint the RUN needed is left in its layer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mount_helpers import cached_steps, layer_names

from helpers.buildcli import build, make_context
from helpers.images import busybox_image
from helpers.registries import RegistryProcess

pytestmark = [pytest.mark.root]

if os.geteuid() != 0 or shutil.which("runc") is None:
    pytest.skip("needs root and runc (overlay mounts, containers)", allow_module_level=True)


@pytest.fixture(scope="module")
def base(lamina_registry: RegistryProcess, busybox_rootfs: Path) -> str:
    return busybox_image(lamina_registry, name="mounts/busybox", rootfs=busybox_rootfs).reference


CACHE = """\
FROM {base}
RUN --mount=type=cache,target=/var/cache/app echo x >> /var/cache/app/log && cp /var/cache/app/log /out.txt
RUN --mount=type=cache,target=/cache2,id=/var/cache/app,sharing=locked cat /cache2/log > /shared.txt
RUN --mount=type=cache,target=/perm,uid=1000,gid=1000,mode=0750 busybox stat -c '%a %u %g' /perm > /perm.txt
"""


def test_cache_mounts_persist_share_by_id_and_stay_out_of_layers_and_keys(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = make_context(tmp_path / "ctx", CACHE.format(base=base))
    root, out = tmp_path / "state", tmp_path / "out"
    rc, _, err = build(capsys, context, root, "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "out.txt").read_text() == "x\n"
    assert (out / "shared.txt").read_text() == "x\n"  # id=/var/cache/app: the first RUN's cache
    assert (out / "perm.txt").read_text() == "750 1000 1000\n"
    assert not (out / "var" / "cache").exists() and not (out / "cache2").exists() and not (out / "perm").exists()

    rc, _, err = build(capsys, context, root, "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert all(cached_steps(err).values()), err  # the cache's new content is not part of any key

    oci = tmp_path / "image.tar"
    rc, _, err = build(capsys, context, root, "--no-cache", "--output", f"type=oci,dest={oci}")
    assert rc == 0, err
    layers = layer_names(oci)[1:]
    assert layers == [["out.txt"], ["shared.txt"], ["perm.txt"]]  # no stub, no created parent, no content
    rc, _, err = build(capsys, context, root, "--no-cache", "--output", f"type=local,dest={out}")
    assert (out / "out.txt").read_text() == "x\nx\nx\n"  # kept in the state dir across builds


BIND = """\
FROM {base} AS other
RUN mkdir /stuff && echo from-other > /stuff/o.txt

FROM {base}
WORKDIR /app
RUN --mount=type=bind,target=/src ls -a /src > /ls.txt
RUN --mount=type=bind,source=a.txt,target=single.txt cat /app/single.txt > /single.txt
RUN --mount=type=bind,target=/src,rw echo changed > /src/a.txt && echo new > /src/new.txt && cat /src/a.txt > /rw.txt
RUN --mount=type=bind,from=other,source=/stuff,target=/mnt/other cp /mnt/other/o.txt /o.txt
RUN --mount=type=bind,from={base},source=/etc/passwd,target=/p cp /p /passwd-from-image
"""


def test_binds_of_context_stage_and_image(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {"a.txt": "original\n", "ignored.log": "not sent\n", ".dockerignore": "*.log\n", "sub/b.txt": "b\n"}
    context = make_context(tmp_path / "ctx", BIND.format(base=base), files)
    root, out, oci = tmp_path / "state", tmp_path / "out", tmp_path / "image.tar"
    rc, _, err = build(capsys, context, root, "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "ls.txt").read_text().split() == [".", "..", ".dockerignore", "Dockerfile", "a.txt", "sub"]
    assert (out / "single.txt").read_text() == "original\n"
    assert (out / "rw.txt").read_text() == "changed\n"
    assert (context / "a.txt").read_text() == "original\n" and not (context / "new.txt").exists()
    assert (out / "o.txt").read_text() == "from-other\n"
    assert (out / "passwd-from-image").read_text().startswith("root:")
    assert not (out / "src").exists() and not (out / "mnt").exists() and not (out / "p").exists()
    assert not (out / "app" / "single.txt").exists()

    (context / "ignored.log").write_text("changed, but excluded\n")
    rc, _, err = build(capsys, context, root, "--output", f"type=oci,dest={oci}")
    assert rc == 0, err
    assert all(cached_steps(err).values()), err  # an ignored file is not part of what the binds read
    assert [names for names in layer_names(oci)[2:]] == [
        ["ls.txt"], ["single.txt"], ["rw.txt"], ["o.txt"], ["passwd-from-image"],
    ]

    (context / "sub" / "b.txt").write_text("b2\n")
    rc, _, err = build(capsys, context, root)
    assert rc == 0, err

    single_run = "RUN --mount=type=bind,source=a.txt,target=/single.txt cat /single.txt > /single.txt.copy"
    single = make_context(tmp_path / "ctx3", f"FROM {base}\n{single_run}\n", files)
    assert build(capsys, single, root)[0] == 0
    (single / "sub" / "b.txt").write_text("other\n")
    rc, _, err = build(capsys, single, root)
    assert rc == 0 and cached_steps(err)[single_run] is True, err  # it reads a.txt only
    (single / "a.txt").write_text("edited\n")
    rc, _, err = build(capsys, single, root)
    assert rc == 0 and cached_steps(err)[single_run] is False, err


def test_tmpfs_size_and_mount_errors(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = (
        f"FROM {base}\n"
        "RUN --mount=type=tmpfs,target=/scratch,size=1m echo t > /scratch/t && busybox df -k /scratch "
        "| tail -n 1 > /df.txt && ls /scratch > /list.txt\n"
    )
    context = make_context(tmp_path / "ctx", dockerfile)
    out = tmp_path / "out"
    rc, _, err = build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "df.txt").read_text().split()[1] == "1024"
    assert (out / "list.txt").read_text() == "t\n" and not (out / "scratch").exists()

    missing = make_context(tmp_path / "ctx2", f"FROM {base}\nRUN --mount=type=bind,source=nope,target=/n true\n")
    rc, _, err = build(capsys, missing, tmp_path / "state")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert "Dockerfile:2" in errors[0] and "source /nope: file not found in build context" in errors[0]


def test_bind_from_a_named_directory_context(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = make_context(tmp_path / "extra", "unused\n", {"cfg/x.conf": "named\n", "cfg/k.secret": "no\n",
                                                          ".dockerignore": "**/*.secret\n"})
    run = "RUN --mount=type=bind,from=extra,source=cfg,target=/cfg ls /cfg > /ls.txt && cat /cfg/x.conf > /x.txt"
    context = make_context(tmp_path / "ctx", f"FROM {base}\n{run}\n")
    root, out = tmp_path / "state", tmp_path / "out"
    flags = ("--build-context", f"extra={extra}", "--output", f"type=local,dest={out}")
    rc, _, err = build(capsys, context, root, *flags)
    assert rc == 0, err
    assert (out / "ls.txt").read_text() == "x.conf\n"  # the named context's own .dockerignore applies
    assert (out / "x.txt").read_text() == "named\n" and not (out / "cfg").exists()
    (extra / "cfg" / "x.conf").write_text("edited\n")  # its content is part of the RUN's key
    rc, _, err = build(capsys, context, root, *flags)
    assert rc == 0 and cached_steps(err)[run] is False, err
    assert (out / "x.txt").read_text() == "edited\n"


def test_cache_seeded_from_a_stage_and_read_only(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = (
        f"FROM {base} AS seed\n"
        "RUN mkdir -p /s && echo seeded > /s/data\n"
        f"FROM {base}\n"
        "RUN --mount=type=cache,target=/c,id=seeded,from=seed,source=/s cat /c/data > /first.txt "
        "&& echo more >> /c/data\n"
        "RUN --mount=type=cache,target=/c,id=seeded,from=seed,source=/s,ro cat /c/data > /second.txt "
        "&& (touch /c/x 2>/dev/null && echo writable || echo read-only) > /ro.txt\n"
    )
    context = make_context(tmp_path / "ctx", dockerfile)
    out = tmp_path / "out"
    rc, _, err = build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "first.txt").read_text() == "seeded\n"  # a new cache starts as a copy of its from= source
    assert (out / "second.txt").read_text() == "seeded\nmore\n"  # the same id and seed: the same cache
    assert (out / "ro.txt").read_text() == "read-only\n"


def test_bind_from_scratch_is_an_empty_directory(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = make_context(tmp_path / "ctx", f"FROM {base}\nRUN --mount=from=scratch,target=/e ls -A /e | wc -l > /n\n")
    out = tmp_path / "out"
    rc, _, err = build(capsys, context, tmp_path / "state", "--output", f"type=local,dest={out}")
    assert rc == 0, err
    assert (out / "n").read_text().strip() == "0"

"""skopeo (containers/image, an independent Go client) against lamina, with CNCF distribution as the peer.

Images go in from an OCI layout made by tests/helpers/images.py, come back out into a fresh layout,
and must keep their digests and their files; OCI and Docker schema2 media types, a two-platform index,
inspect, list-tags and delete; and a copy lamina -> distribution -> lamina preserves every digest.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

from helpers.images import busybox_image, skopeo, two_platform_index
from helpers.registries import RegistryProcess
from lamina.oci import mediatypes as mt
from lamina.oci.layout import REF_NAME_ANNOTATION

pytestmark = [pytest.mark.interop]

ALL_MANIFESTS = ", ".join(sorted(mt.MANIFEST_MEDIA_TYPES))


@pytest.fixture(autouse=True)
def _needs_skopeo(skopeo_bin: str) -> None:
    """Every test here drives skopeo; skip with the reason when it is missing."""


def repo(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def layout_files(layout: Path, tag: str = "latest") -> dict[str, bytes]:
    """Regular files of every layer of the (single-platform) image named ``tag`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    (top,) = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME_ANNOTATION) == tag]
    manifest = json.loads(read_blob(layout, top["digest"]))
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        raw = gzip.decompress(read_blob(layout, layer["digest"]))
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                if member.isreg():
                    files[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return files


def read_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def registry_digest(registry: RegistryProcess, name: str, reference: str) -> str:
    response = requests.head(
        f"{registry.url}/v2/{name}/manifests/{reference}", headers={"Accept": ALL_MANIFESTS}, timeout=30
    )
    assert response.status_code == 200, f"HEAD {name}:{reference} -> {response.status_code}"
    return response.headers["Docker-Content-Digest"]


def test_oci_image_in_and_out(any_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path) -> None:
    name = repo("skopeo/oci")
    pushed = busybox_image(any_registry, name=name, rootfs=busybox_rootfs)
    got = requests.get(
        f"{any_registry.url}/v2/{name}/manifests/latest", headers={"Accept": mt.OCI_MANIFEST}, timeout=30
    )
    assert got.status_code == 200
    assert got.content == pushed.image.manifest.data, "the registry must return the manifest byte for byte"
    assert got.headers["Docker-Content-Digest"] == pushed.digest
    assert got.headers["Content-Type"] == mt.OCI_MANIFEST

    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", f"docker://{pushed.reference}", f"oci:{out}:latest")
    assert read_blob(out, pushed.digest) == pushed.image.manifest.data
    files = layout_files(out)
    assert files["bin/busybox"] == (busybox_rootfs / "bin" / "busybox").read_bytes()
    assert b"app:x:1000:1000" in files["etc/passwd"]


def test_docker_schema2_image(any_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path) -> None:
    name = repo("skopeo/docker")
    source = busybox_image(any_registry, name=repo("skopeo/src"), rootfs=busybox_rootfs)
    skopeo(
        "copy", "--format", "v2s2", "--src-tls-verify=false", "--dest-tls-verify=false",
        f"docker://{source.reference}", f"docker://{any_registry.host}/{name}:v2s2",
    )  # fmt: skip
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{any_registry.host}/{name}:v2s2").stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == mt.DOCKER_MANIFEST_V2
    assert manifest["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [mt.DOCKER_LAYER_GZIP]
    assert manifest["layers"][0]["digest"] == source.image.layers[0].digest, "conversion must not recompress"

    response = requests.get(
        f"{any_registry.url}/v2/{name}/manifests/v2s2", headers={"Accept": mt.DOCKER_MANIFEST_V2}, timeout=30
    )
    assert response.headers["Content-Type"] == mt.DOCKER_MANIFEST_V2
    digest = response.headers["Docker-Content-Digest"]
    out = tmp_path / "dir"
    skopeo("copy", "--src-tls-verify=false", f"docker://{any_registry.host}/{name}@{digest}", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == response.content


def test_multi_arch_index(any_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path) -> None:
    name = repo("skopeo/multi")
    pushed = two_platform_index(any_registry, name=name, rootfs=busybox_rootfs)
    assert registry_digest(any_registry, name, "latest") == pushed.digest
    for platform, image in pushed.images.items():
        assert registry_digest(any_registry, name, image.digest) == image.digest, platform

    out = tmp_path / "all"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{pushed.reference}", f"oci:{out}:latest")
    assert read_blob(out, pushed.digest) == pushed.index.data
    for platform, image in pushed.images.items():
        one = tmp_path / platform.replace("/", "-")
        skopeo(
            "--override-arch", platform.split("/")[1], "copy", "--src-tls-verify=false",
            f"docker://{pushed.reference}", f"oci:{one}:latest",
        )  # fmt: skip
        assert layout_files(one)["platform.txt"] == f"{platform}\n".encode()
        assert read_blob(one, image.digest) == image.manifest.data


def test_inspect_and_list_tags(any_registry: RegistryProcess, busybox_rootfs: Path) -> None:
    name = repo("skopeo/tags")
    pushed = busybox_image(any_registry, name=name, tag="v1", rootfs=busybox_rootfs)
    for tag in ("v2", "a-tag", "latest"):
        skopeo(
            "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{pushed.reference}", f"docker://{any_registry.host}/{name}:{tag}",
        )  # fmt: skip
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{any_registry.host}/{name}").stdout)
    assert tags["Repository"] == f"{any_registry.host}/{name}"
    assert sorted(tags["Tags"]) == ["a-tag", "latest", "v1", "v2"]

    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{any_registry.host}/{name}:v2").stdout)
    assert info["Digest"] == pushed.digest
    assert (info["Architecture"], info["Os"]) == ("amd64", "linux")
    assert info["Layers"] == [pushed.image.layers[0].digest]
    assert info["Env"] == [json.loads(pushed.image.config.data)["config"]["Env"][0]]


def test_delete(any_registry: RegistryProcess, busybox_rootfs: Path) -> None:
    name = repo("skopeo/delete")
    pushed = busybox_image(any_registry, name=name, rootfs=busybox_rootfs)
    skopeo("delete", "--tls-verify=false", f"docker://{pushed.reference}")
    for reference in (pushed.digest, "latest"):
        response = requests.get(
            f"{any_registry.url}/v2/{name}/manifests/{reference}", headers={"Accept": ALL_MANIFESTS}, timeout=30
        )
        assert response.status_code == 404, reference
        assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    with pytest.raises(RuntimeError, match="manifest unknown"):
        skopeo("inspect", "--tls-verify=false", f"docker://{pushed.reference}")


def test_lamina_to_distribution_and_back(
    lamina_registry: RegistryProcess, distribution_registry: RegistryProcess, busybox_rootfs: Path, tmp_path: Path
) -> None:
    single = busybox_image(lamina_registry, name=repo("roundtrip/one"), rootfs=busybox_rootfs)
    multi = two_platform_index(lamina_registry, name=repo("roundtrip/multi"), rootfs=busybox_rootfs)
    # and a Docker schema2 image (skopeo converts on the way in), to vary the media types
    docker = f"{lamina_registry.host}/{repo('roundtrip/docker')}:latest"
    skopeo(
        "copy", "--format", "v2s2", "--src-tls-verify=false", "--dest-tls-verify=false",
        f"docker://{single.reference}", f"docker://{docker}",
    )  # fmt: skip
    docker_path = docker.split("/", 1)[1].rsplit(":", 1)[0]
    pushed = [
        (single.reference, single.digest),
        (multi.reference, multi.digest),
        (docker, registry_digest(lamina_registry, docker_path, "latest")),
    ]
    for name, digest in pushed:
        path = name.split("/", 1)[1].rsplit(":", 1)[0]
        via = f"{distribution_registry.host}/{path}:copied"
        back = f"{lamina_registry.host}/{path}-back:copied"
        copy = ["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"]
        skopeo(*copy, f"docker://{name}", f"docker://{via}")
        skopeo(*copy, f"docker://{via}", f"docker://{back}")
        assert registry_digest(distribution_registry, path, "copied") == digest
        assert registry_digest(lamina_registry, f"{path}-back", "copied") == digest

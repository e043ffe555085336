"""oras (the ORAS Python client) against lamina: artifacts with files, a referrer with a ``subject``,
found again through ``GET /v2/<name>/referrers/<digest>`` (OCI distribution-spec 1.1 "Listing Referrers")."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import oras.client
import oras.oci
import pytest
import requests

from helpers.registries import RegistryProcess
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.interop]

SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1+json"


def oras_client(registry: RegistryProcess) -> oras.client.OrasClient:
    return oras.client.OrasClient(hostname=registry.host, insecure=True)


def manifest_descriptor(registry: RegistryProcess, name: str, reference: str) -> oras.oci.Subject:
    """The pushed manifest as a subject: its exact bytes' digest and size, as the registry serves them."""
    response = requests.get(
        f"{registry.url}/v2/{name}/manifests/{reference}", headers={"Accept": mt.OCI_MANIFEST}, timeout=30
    )
    assert response.status_code == 200, response.text
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert response.headers["Docker-Content-Digest"] == digest
    return oras.oci.Subject(mediaType=mt.OCI_MANIFEST, digest=digest, size=len(response.content))


def push_artifact(
    client: oras.client.OrasClient, target: str, files: dict[str, bytes], workdir: Path, config_type: str, **kw: object
) -> requests.Response:
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, content in files.items():
        path = workdir / filename
        path.write_bytes(content)
        paths.append(str(path))
    return client.push(
        target=target,
        files=paths,
        manifest_config=f"/dev/null:{config_type}",
        disable_path_validation=True,
        quiet=True,
        **kw,
    )


def referrers(registry: RegistryProcess, name: str, digest: str, artifact_type: str | None = None) -> requests.Response:
    params = {"artifactType": artifact_type} if artifact_type else None
    response = requests.get(f"{registry.url}/v2/{name}/referrers/{digest}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == mt.OCI_INDEX
    return response


def test_artifact_with_subject_and_referrers(lamina_registry: RegistryProcess, tmp_path: Path) -> None:
    name = f"oras/{uuid.uuid4().hex[:10]}"
    client = oras_client(lamina_registry)
    files = {"readme.txt": b"hello from oras\n", "data.bin": bytes(range(256)) * 64}
    pushed = push_artifact(
        client, f"{lamina_registry.host}/{name}:v1", files, tmp_path / "in", "application/vnd.example.thing.v1+json"
    )
    assert pushed.status_code == 201
    subject = manifest_descriptor(lamina_registry, name, "v1")

    # nothing refers to it yet: an empty index, not a 404
    empty = referrers(lamina_registry, name, subject.digest).json()
    assert empty["manifests"] == []

    sbom = push_artifact(
        client, f"{lamina_registry.host}/{name}:sbom", {"sbom.json": b'{"packages":[]}'}, tmp_path / "sbom",
        SBOM_TYPE, subject=subject, manifest_annotations={"org.example.kind": "sbom"},
    )  # fmt: skip
    assert sbom.status_code == 201
    assert sbom.headers.get("OCI-Subject") == subject.digest, "a registry with referrers support says so on PUT"
    push_artifact(
        client, f"{lamina_registry.host}/{name}:sig", {"sig.bin": b"signed"}, tmp_path / "sig",
        SIGNATURE_TYPE, subject=subject,
    )  # fmt: skip
    sbom_digest = manifest_descriptor(lamina_registry, name, "sbom").digest
    sig_digest = manifest_descriptor(lamina_registry, name, "sig").digest

    # pull back the artifact and a referrer, files intact
    out = tmp_path / "out"
    pulled = client.pull(target=f"{lamina_registry.host}/{name}:v1", outdir=str(out))
    assert {Path(p).name: Path(p).read_bytes() for p in pulled} == files
    assert client.get_manifest(f"{lamina_registry.host}/{name}@{sbom_digest}")["subject"]["digest"] == subject.digest

    every = referrers(lamina_registry, name, subject.digest)
    assert "OCI-Filters-Applied" not in every.headers
    found = {m["digest"]: m for m in every.json()["manifests"]}
    assert set(found) == {sbom_digest, sig_digest}
    assert found[sbom_digest]["artifactType"] == SBOM_TYPE, "artifactType falls back to the config media type"
    assert found[sbom_digest]["mediaType"] == mt.OCI_MANIFEST
    assert found[sbom_digest]["annotations"] == {"org.example.kind": "sbom"}
    assert found[sig_digest]["artifactType"] == SIGNATURE_TYPE

    filtered = referrers(lamina_registry, name, subject.digest, SIGNATURE_TYPE)
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [sig_digest]
    assert referrers(lamina_registry, name, subject.digest, "application/vnd.none+json").json()["manifests"] == []

    # a subject need not exist yet (distribution-spec: PUT with an unknown subject is accepted)
    missing = "sha256:" + hashlib.sha256(b"not pushed yet").hexdigest()
    dangling = oras.oci.Subject(mediaType=mt.OCI_MANIFEST, digest=missing, size=123)
    push_artifact(
        client, f"{lamina_registry.host}/{name}:early", {"early.txt": b"x"}, tmp_path / "early", SBOM_TYPE,
        subject=dangling,
    )  # fmt: skip
    assert [m["artifactType"] for m in referrers(lamina_registry, name, missing).json()["manifests"]] == [SBOM_TYPE]


def test_oras_chunked_push_and_tags(any_registry: RegistryProcess, tmp_path: Path) -> None:
    """oras' chunked upload path (PATCH with Content-Range) and its tags/delete calls."""
    name = f"oras/{uuid.uuid4().hex[:10]}"
    client = oras_client(any_registry)
    host = any_registry.host
    contents = {tag: hashlib.sha256(tag.encode()).digest() * 40_000 for tag in ("one", "two")}  # 1.28 MB each
    for tag, content in contents.items():
        push_artifact(
            client, f"{host}/{name}:{tag}", {"big.bin": content}, tmp_path / tag,
            "application/vnd.example.big.v1+json", do_chunked=True, chunk_size=256 * 1024,
        )  # fmt: skip
    assert sorted(client.get_tags(f"{host}/{name}")) == ["one", "two"]
    pulled = client.pull(target=f"{host}/{name}:two", outdir=str(tmp_path / "out"))
    assert Path(pulled[0]).read_bytes() == contents["two"]
    assert client.delete_tag(f"{host}/{name}", "one")
    assert client.get_tags(f"{host}/{name}") == ["two"]

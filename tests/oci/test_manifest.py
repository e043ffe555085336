"""Manifest parsing and classification against the BuildKit reference captures and hand-made cases."""

import json

import pytest

from helpers.reference import REFERENCE_DIR
from lamina.oci import FormatError, ImageIndex, ImageManifest, ManifestKind, classify, parse_manifest
from lamina.oci import mediatypes as mt

REF = REFERENCE_DIR
D = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def image(**over: object) -> dict:
    doc: dict = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    doc.update(over)
    return doc


def raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_buildkit_image_manifest_cache_is_a_build_cache() -> None:
    data = (REF / "cache-manifest.image-manifest-true.json").read_bytes()
    m = parse_manifest(data, mt.OCI_MANIFEST)
    assert isinstance(m, ImageManifest)
    assert classify(m) is ManifestKind.BUILD_CACHE
    assert all("containerd.io/uncompressed" in (layer.annotations or {}) for layer in m.layers)


@pytest.mark.parametrize("name", ["cache-manifest.legacy-oci-index.json", "cache-manifest.legacy-docker-list.json"])
def test_legacy_cache_index_is_a_build_cache(name: str) -> None:
    m = parse_manifest((REF / name).read_bytes())
    assert isinstance(m, ImageIndex)
    assert classify(m) is ManifestKind.BUILD_CACHE


def test_kinds() -> None:
    assert classify(parse_manifest(raw(image()))) is ManifestKind.IMAGE
    art = image(artifactType="application/vnd.example+json")
    assert classify(parse_manifest(raw(art))) is ManifestKind.ARTIFACT
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": D, "size": 5}],
    }
    assert classify(parse_manifest(raw(index))) is ManifestKind.INDEX


def test_round_trip_is_stable() -> None:
    data = (REF / "image-manifest.json").read_bytes()
    m = parse_manifest(data)
    assert parse_manifest(m.to_bytes()) == m
    assert json.loads(m.to_bytes()) == json.loads(data)


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (raw({"schemaVersion": 1, "name": "x"}), None, "schema1"),
        (raw(image()), mt.DOCKER_MANIFEST_SCHEMA1_SIGNED, "schema1"),
        (raw(image(schemaVersion=3)), None, "schemaVersion"),
        (raw(image()), mt.OCI_INDEX, "does not match"),
        (raw(image(config={"mediaType": mt.OCI_CONFIG, "digest": "sha256:xyz", "size": 1})), None, "config.digest"),
        (raw(image(config={"mediaType": mt.OCI_CONFIG, "digest": D, "size": -1})), None, "config.size"),
        (raw(image(layers="nope")), None, "layers"),
        (raw(image(layers=[{"mediaType": "bad type", "digest": D, "size": 1}])), None, r"layers\[0\]\.mediaType"),
        (raw(image(mediaType=mt.DOCKER_MANIFEST_V2)), mt.DOCKER_MANIFEST_V2, "config mediaType"),
        (raw(image(manifests=[])), None, "must not have 'manifests'"),
        (raw(image(mediaType="application/vnd.example+json")), None, "unsupported manifest media type"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(body: bytes, content_type: str | None, needle: str) -> None:
    with pytest.raises(FormatError, match=needle):
        parse_manifest(body, content_type)


def test_empty_layers_policy() -> None:
    doc = raw(image(layers=[]))
    assert parse_manifest(doc).layers == ()
    with pytest.raises(FormatError, match="empty"):
        parse_manifest(doc, allow_empty_layers=False)


def test_media_type_inferred_from_content_type_or_shape() -> None:
    doc = image()
    del doc["mediaType"]
    assert isinstance(parse_manifest(raw(doc), mt.OCI_MANIFEST), ImageManifest)
    assert isinstance(parse_manifest(raw({"schemaVersion": 2, "manifests": []})), ImageIndex)

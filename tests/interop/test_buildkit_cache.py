"""A BuildKit-shaped remote cache pushed the way BuildKit pushes it (POST + PUT ?digest= per blob, then the
manifest), in the ``image-manifest=true`` form and the legacy index forms, against lamina under both
``legacy_buildkit_cache`` policies and against CNCF distribution for comparison."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from helpers.api import ApiError, blob_exists, get_blob, get_manifest, push_blob, put_manifest
from helpers.buildkit_cache import REFERENCE_DIR, BuildkitCache, buildkit_cache
from helpers.images import Blob
from helpers.registries import RegistryProcess
from lamina.oci import CacheConfig, ImageIndex, ManifestKind, classify, is_legacy_buildkit_cache, parse_manifest
from lamina.oci import mediatypes as mt

pytestmark = [pytest.mark.interop]

REJECT_LEGACY = 'legacy_buildkit_cache = "reject"\n'
ACCEPT_ALL = ", ".join(sorted(mt.MANIFEST_MEDIA_TYPES))


@pytest.fixture(scope="module")
def cache() -> BuildkitCache:
    return buildkit_cache()


def legacy_form(cache: BuildkitCache, form: str) -> Blob:
    return cache.legacy_oci_index if form == "oci" else cache.legacy_docker_list


def push_blobs(registry: RegistryProcess, name: str, cache: BuildkitCache, skip: str | None = None) -> None:
    for blob in cache.blobs():
        if blob.digest != skip:
            assert push_blob(registry.url, name, blob.data) == blob.digest


def error_codes(err: ApiError) -> list[str]:
    return [e["code"] for e in err.response.json()["errors"]]


def test_fixture_keeps_the_reference_shape(cache: BuildkitCache) -> None:
    reference = json.loads((REFERENCE_DIR / "cache-manifest.image-manifest-true.json").read_text())
    ours = json.loads(cache.image_manifest.data)
    assert ours.keys() == reference.keys()
    assert [sorted(x["annotations"]) for x in ours["layers"]] == [sorted(x["annotations"]) for x in reference["layers"]]
    assert [x["digest"] for x in ours["layers"]] == sorted(x["digest"] for x in ours["layers"])
    parsed = parse_manifest(cache.image_manifest.data, mt.OCI_MANIFEST)
    assert classify(parsed) is ManifestKind.BUILD_CACHE
    config = CacheConfig.parse(cache.cacheconfig.data)
    assert config.to_bytes() == cache.cacheconfig.data
    assert {str(x.blob) for x in config.layers} == {x.digest for x in cache.layers}
    assert len(config.records) == len(CacheConfig.parse((REFERENCE_DIR / "cacheconfig.raw.json").read_bytes()).records)
    for form, media_type in (("oci", mt.OCI_INDEX), ("docker", mt.DOCKER_MANIFEST_LIST)):
        index = parse_manifest(legacy_form(cache, form).data, media_type)
        assert isinstance(index, ImageIndex) and is_legacy_buildkit_cache(index)


def test_image_manifest_cache_round_trip(any_registry: RegistryProcess, cache: BuildkitCache) -> None:
    name = f"cache/{uuid.uuid4().hex[:10]}"
    push_blobs(any_registry, name, cache)
    put = put_manifest(any_registry.url, name, "cache", cache.image_manifest.data, mt.OCI_MANIFEST)
    assert put.headers["Docker-Content-Digest"] == cache.image_manifest.digest

    # what an importing BuildKit does: resolve the tag, GET the manifest and the cacheconfig, HEAD the layers
    for reference in ("cache", cache.image_manifest.digest):
        got = get_manifest(any_registry.url, name, reference, ACCEPT_ALL)
        assert got.content == cache.image_manifest.data
        assert got.headers["Content-Type"] == mt.OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == cache.image_manifest.digest
    assert get_blob(any_registry.url, name, cache.cacheconfig.digest) == cache.cacheconfig.data
    assert all(blob_exists(any_registry.url, name, layer.digest) for layer in cache.layers)


@pytest.mark.parametrize("form", ["oci", "docker"])
def test_legacy_index_accepted_by_default(any_registry: RegistryProcess, cache: BuildkitCache, form: str) -> None:
    name = f"cache/{uuid.uuid4().hex[:10]}"
    legacy = legacy_form(cache, form)
    push_blobs(any_registry, name, cache)
    put = put_manifest(any_registry.url, name, "cache", legacy.data, legacy.media_type)
    assert put.headers["Docker-Content-Digest"] == legacy.digest
    got = get_manifest(any_registry.url, name, "cache", ACCEPT_ALL)
    assert got.content == legacy.data
    assert got.headers["Content-Type"] == legacy.media_type
    assert get_blob(any_registry.url, name, cache.cacheconfig.digest) == cache.cacheconfig.data


@pytest.mark.parametrize("form", ["oci", "docker"])
def test_legacy_index_rejected_by_policy(
    make_lamina_registry: Callable[..., RegistryProcess], cache: BuildkitCache, form: str
) -> None:
    registry = make_lamina_registry(REJECT_LEGACY)
    name = "cache/strict"
    legacy = legacy_form(cache, form)
    push_blobs(registry, name, cache)
    with pytest.raises(ApiError) as err:
        put_manifest(registry.url, name, "cache", legacy.data, legacy.media_type)
    assert err.value.response.status_code == 400
    assert error_codes(err.value) == ["MANIFEST_INVALID"]
    assert "image-manifest=true" in err.value.response.text, "the error tells how to export instead"
    get_manifest(registry.url, name, "cache", ACCEPT_ALL, expect=404)
    # the image-manifest=true form of the same cache is what a strict registry takes
    put_manifest(registry.url, name, "cache", cache.image_manifest.data, mt.OCI_MANIFEST)
    assert get_manifest(registry.url, name, "cache", ACCEPT_ALL).content == cache.image_manifest.data


def test_cache_with_a_missing_layer_is_refused(any_registry: RegistryProcess, cache: BuildkitCache) -> None:
    name = f"cache/{uuid.uuid4().hex[:10]}"
    missing = cache.layers[3].digest
    push_blobs(any_registry, name, cache, skip=missing)
    with pytest.raises(ApiError) as err:
        put_manifest(any_registry.url, name, "cache", cache.image_manifest.data, mt.OCI_MANIFEST)
    assert err.value.response.status_code == 400
    assert error_codes(err.value) == ["MANIFEST_BLOB_UNKNOWN"]


@pytest.mark.parametrize("form", ["oci", "docker"])
def test_accepted_legacy_index_needs_its_blobs(
    lamina_registry: RegistryProcess, cache: BuildkitCache, form: str
) -> None:
    """lamina accepts the legacy form only whole: a blob it lists that the repository lacks is refused."""
    name = f"cache/{uuid.uuid4().hex[:10]}"
    legacy = legacy_form(cache, form)
    push_blobs(lamina_registry, name, cache, skip=cache.layers[0].digest)
    with pytest.raises(ApiError) as err:
        put_manifest(lamina_registry.url, name, "cache", legacy.data, legacy.media_type)
    assert err.value.response.status_code == 400
    assert error_codes(err.value) == ["MANIFEST_BLOB_UNKNOWN"]

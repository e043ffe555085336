"""Platform selection (pure) and image resolution through indexes on real distribution."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from client_peers import ServeApp

from helpers.registries import RegistryProcess
from lamina.client import (
    Credentials,
    NoMatchingPlatform,
    RegistryClient,
    RegistryError,
    resolve_image,
    resolve_platform,
    select_platform,
)
from lamina.oci import Descriptor, ImageIndex, ImageManifest, Platform, digest_of
from lamina.oci import mediatypes as mt


def _entry(name: str, platform: Platform | None, media_type: str = mt.OCI_MANIFEST) -> Descriptor:
    return Descriptor(media_type, digest_of(name.encode()), 100, platform=platform)


def _index(*entries: Descriptor) -> ImageIndex:
    return ImageIndex(mt.OCI_INDEX, entries)


AMD64 = _entry("amd64", Platform("amd64", "linux"))
ARM64 = _entry("arm64", Platform("arm64", "linux", "v8"))
ARMV6 = _entry("armv6", Platform("arm", "linux", "v6"))
ARMV7 = _entry("armv7", Platform("arm", "linux", "v7"))
ATTEST = _entry("attestation", Platform("unknown", "unknown"))
ARM64_NO_VARIANT = _entry("a64", Platform("arm64", "linux"))


@pytest.mark.parametrize(
    ("wanted", "entries", "expected"),
    [
        ("linux/amd64", (ATTEST, ARM64, AMD64), AMD64),
        ("linux/arm64", (AMD64, ARM64), ARM64),
        ("linux/arm64/v8", (AMD64, ARM64_NO_VARIANT), ARM64_NO_VARIANT),
        ("linux/aarch64", (AMD64, ARM64), ARM64),
        ("linux/arm", (ARMV6, ARMV7), ARMV7),
        ("linux/arm/v7", (ARMV6, AMD64), ARMV6),
        ("linux/arm/7", (ARMV7,), ARMV7),
    ],
)
def test_select_platform(wanted: str, entries: tuple[Descriptor, ...], expected: Descriptor) -> None:
    assert select_platform(_index(*entries), Platform.from_string(wanted)) == expected


def test_no_match_lists_what_is_offered_and_never_picks_attestations() -> None:
    with pytest.raises(NoMatchingPlatform) as info:
        select_platform(_index(ATTEST, ARMV7, AMD64), Platform.from_string("linux/arm/v6"))
    assert "linux/arm/v6" in str(info.value)
    assert "linux/amd64" in str(info.value) and "linux/arm/v7" in str(info.value)
    assert "unknown" not in str(info.value).split("offers:")[1]
    with pytest.raises(NoMatchingPlatform):
        select_platform(_index(ATTEST), Platform.from_string("linux/amd64"))


def test_resolve_platform_reads_a_docker_manifest_list() -> None:
    arm = _entry("arm64", Platform("arm64", "linux", "v8"), mt.DOCKER_MANIFEST_V2)
    amd = _entry("amd64", Platform("amd64", "linux"), mt.DOCKER_MANIFEST_V2)
    data = json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                       "manifests": [amd.dump(), arm.dump()]}).encode()
    assert resolve_platform(data, Platform.from_string("linux/arm64")) == arm


async def _push_platform_image(c: RegistryClient, repo: str, arch: str, docker: bool) -> Descriptor:
    config = json.dumps({"architecture": arch, "os": "linux", "config": {"Env": [f"ARCH={arch}"]},
                         "rootfs": {"type": "layers", "diff_ids": [str(digest_of(arch.encode()))]}}).encode()
    layer = f"layer of {arch}".encode()
    await c.push_blob(repo, digest_of(config), len(config), config, kind="config")
    await c.push_blob(repo, digest_of(layer), len(layer), layer)
    manifest = ImageManifest(
        mt.DOCKER_MANIFEST_V2 if docker else mt.OCI_MANIFEST,
        Descriptor(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, digest_of(config), len(config)),
        (Descriptor(mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP, digest_of(layer), len(layer)),),
    ).to_bytes()
    media_type = mt.DOCKER_MANIFEST_V2 if docker else mt.OCI_MANIFEST
    digest = await c.put_manifest(repo, str(digest_of(manifest)), manifest, media_type)
    platform = Platform(arch, "linux", "v8" if arch == "arm64" else None)
    return Descriptor(media_type, digest, len(manifest), platform=platform)


@pytest.mark.interop
@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
async def test_resolve_image_through_an_index(distribution: RegistryProcess, docker: bool) -> None:
    async with RegistryClient(distribution.host) as c:
        amd = await _push_platform_image(c, "lib/base", "amd64", docker)
        arm = await _push_platform_image(c, "lib/base", "arm64", docker)
        index_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
        doc = {"schemaVersion": 2, "mediaType": index_type, "manifests": [amd.dump(), arm.dump()]}
        index = json.dumps(doc).encode()
        index_digest = await c.put_manifest("lib/base", "1.0", index, index_type)
        layers_before = c.stats.downloaded["layer"]

        arm_image = await resolve_image(c, "lib/base", "1.0", Platform.from_string("linux/arm64"))
        assert arm_image.index_digest == index_digest
        assert arm_image.manifest_digest == arm.digest
        assert arm_image.config.architecture == "arm64"
        assert arm_image.config.config.env == ["ARCH=arm64"]
        assert arm_image.manifest_media_type == arm.media_type

        by_digest = await resolve_image(c, "lib/base", str(index_digest), Platform.from_string("linux/amd64"))
        assert by_digest.manifest_digest == amd.digest and by_digest.config.architecture == "amd64"

        direct = await resolve_image(c, "lib/base", str(amd.digest), Platform.from_string("linux/amd64"))
        assert direct.index_digest is None and direct.manifest_digest == amd.digest

        with pytest.raises(NoMatchingPlatform, match="lib/base"):
            await resolve_image(c, "lib/base", "1.0", Platform.from_string("linux/s390x"))
        assert c.stats.downloaded["layer"] == layers_before  # resolving never touches layers


async def test_bytes_that_are_not_a_manifest_are_manifest_invalid_naming_which(serve_app: ServeApp) -> None:
    """At the top (the tag) and one level down (the index's chosen child): MANIFEST_INVALID naming the reference."""
    junk = b"not json"
    child = Descriptor(mt.OCI_MANIFEST, digest_of(junk), len(junk), platform=Platform("amd64", "linux"))
    index = _index(child).to_bytes()
    served = {"junk": (junk, mt.OCI_MANIFEST), "multi": (index, mt.OCI_INDEX),
              str(child.digest): (junk, mt.OCI_MANIFEST)}

    async def handler(request: web.Request) -> web.Response:
        body, media_type = served[request.match_info["ref"]]
        return web.Response(body=body, content_type=media_type)

    app = web.Application()
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", handler)
    host = await serve_app(app)
    async with RegistryClient(host, credentials=Credentials()) as c:
        for reference, named in (("junk", "manifest junk"), ("multi", f"manifest {child.digest}")):
            with pytest.raises(RegistryError) as info:
                await resolve_image(c, "r/x", reference, Platform("amd64", "linux"))
            assert info.value.code == "MANIFEST_INVALID" and info.value.obj == named, info.value
            assert "not valid JSON" in info.value.message and info.value.repository == "r/x"

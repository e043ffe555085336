"""--cache-to / --cache-from parsing: BuildKit's defaults, the shorthand, and one clear error per bad value."""

from __future__ import annotations

import pytest

from lamina.build.cacheopts import CacheFrom, CacheOptionError, CacheTo, parse_cache_from, parse_cache_to


def test_registry_defaults_are_buildkits() -> None:
    spec = parse_cache_to("type=registry,ref=localhost:5000/app:cache")
    assert spec == CacheTo("registry", ref="localhost:5000/app:cache")
    assert (spec.mode, spec.image_manifest, spec.oci_mediatypes, spec.compression) == ("min", True, True, "gzip")
    assert not spec.ignore_error and not spec.force_compression


def test_every_registry_option() -> None:
    spec = parse_cache_to(
        "type=registry,ref=r.example/a/b:c,mode=max,image-manifest=false,oci-mediatypes=false,"
        "compression=zstd,compression-level=3,force-compression=true,ignore-error=true"
    )
    assert spec == CacheTo("registry", "r.example/a/b:c", None, "latest", "max", False, False, "zstd", 3, True, True)


def test_image_manifest_needs_oci_mediatypes() -> None:
    with pytest.raises(CacheOptionError, match="image-manifest=true requires oci-mediatypes=true"):
        parse_cache_to("type=registry,ref=r/a:c,oci-mediatypes=false")
    assert not parse_cache_to("type=registry,ref=r/a:c,oci-mediatypes=false,image-manifest=false").oci_mediatypes


def test_local_and_inline() -> None:
    assert parse_cache_to("type=local,dest=/tmp/c,tag=t1") == CacheTo("local", dest="/tmp/c", tag="t1")
    assert parse_cache_to("type=inline") == CacheTo("inline")
    assert parse_cache_from("type=local,src=/tmp/c") == CacheFrom("local", src="/tmp/c", tag="latest")
    digest = "sha256:" + "a" * 64
    assert parse_cache_from(f"type=local,src=/c,digest={digest}").digest == digest


def test_shorthand_is_a_registry_ref() -> None:
    assert parse_cache_from("localhost:5000/app:cache") == CacheFrom("registry", ref="localhost:5000/app:cache")
    assert parse_cache_to("localhost:5000/app:cache").ref == "localhost:5000/app:cache"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=s3,ref=x/y", "type must be registry, local or inline"),
        ("type=registry", "needs ref="),
        ("type=registry,ref=UPPER/x", "invalid --cache-to"),
        ("type=registry,ref=r/a,mode=all", "mode must be min or max"),
        ("type=registry,ref=r/a,image-manifest=yes", "image-manifest must be true or false"),
        ("type=registry,ref=r/a,compression=lz4", "compression must be gzip, zstd or uncompressed"),
        ("type=registry,ref=r/a,compression-level=x", "compression-level must be an integer"),
        ("type=registry,ref=r/a,colour=blue", "unknown option 'colour'"),
        ("type=local", "type=local needs dest=DIR"),
        ("type=inline,mode=max", "mode=min only"),
        ("type=registry,ref=r/a,ref=r/b", "ref given twice"),
    ],
)
def test_bad_cache_to_names_the_value(text: str, message: str) -> None:
    with pytest.raises(CacheOptionError, match=message) as info:
        parse_cache_to(text)
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=inline", "type must be registry or local"),
        ("type=local", "needs src=DIR"),
        ("type=local,src=/c,digest=md5:00", "invalid --cache-from"),
        ("type=registry,ref=r/a,mode=max", "unknown option 'mode'"),
    ],
)
def test_bad_cache_from_names_the_value(text: str, message: str) -> None:
    with pytest.raises(CacheOptionError, match=message):
        parse_cache_from(text)

"""The ``blobs = "s3://..."`` setting: parsed once at start, every mistake one line naming it; and the
resumable SHA-256 that carries a chunked upload's digest from one replica to the next."""

from __future__ import annotations

import hashlib
import os

import pytest

from lamina.registry.config import ConfigError, load_config
from lamina.store.s3client import parse_s3_url
from lamina.store.s3hash import ResumableSha256, StateError


def test_parse_s3_url() -> None:
    location = parse_s3_url("s3://my-bucket/team/registry/?endpoint=http://127.0.0.1:7480&region=eu")
    assert (location.bucket, location.prefix, location.endpoint, location.region, location.redirect) == (
        "my-bucket", "team/registry", "http://127.0.0.1:7480", "eu", True,
    )
    assert location.key("blobs", "sha256", "ab") == "team/registry/blobs/sha256/ab"
    assert parse_s3_url("s3://bkt?redirect=false").redirect is False
    assert parse_s3_url(location.url()) == location


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///data", "expected s3://BUCKET"),
        ("s3://Upper/x", "is not an S3 bucket name"),
        ("s3://bkt/x?endpoint=ftp://h", "is not an http:// or https:// URL"),
        ("s3://bkt/x?redirect=maybe", "redirect must be true or false"),
        ("s3://bkt/x?secret=1", "unknown option 'secret'"),
    ],
)
def test_bad_blobs_settings_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"blobs": url})


def test_blobs_setting_reaches_the_config() -> None:
    assert load_config().blobs is None  # the embedded default: blobs under root
    config = load_config(overrides={"blobs": "s3://bkt/p?endpoint=http://127.0.0.1:1&region=r"})
    assert config.blobs == "s3://bkt/p?endpoint=http://127.0.0.1:1&region=r"


def test_resumable_sha256_matches_hashlib_across_a_save() -> None:
    data = os.urandom(3 * 65536 + 77)
    first = ResumableSha256()
    first.update(data[:100_001])  # a partial block pending in the saved state
    resumed = ResumableSha256.load(first.save())
    resumed.update(bytearray(data[100_001:150_000]))
    resumed.update(memoryview(data)[150_000:])
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    assert first.hexdigest() == hashlib.sha256(data[:100_001]).hexdigest()  # digest() leaves the state usable
    with pytest.raises(StateError):
        ResumableSha256.load(b"\x02" + first.save()[1:])

"""The ``blobs = "s3://..."`` setting: parsed once at start, every mistake one line naming it; the
resumable SHA-256 that carries a chunked upload's digest from one replica to the next; and when an S3
session's lock may be taken over."""

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


def test_an_s3_session_lock_is_taken_over_only_from_the_dead_or_the_silent() -> None:
    import json
    import subprocess

    from lamina.store.s3lock import lock_body, may_take_over

    mine = lock_body("token")
    assert not may_take_over(mine, stale_seconds=30)  # this process holds it, refreshed just now
    assert may_take_over(mine, stale_seconds=-1)  # not refreshed for longer than allowed
    child = subprocess.Popen(["true"])
    child.wait()  # exited and reaped: its pid names no process of this host now
    assert may_take_over(json.dumps(json.loads(mine) | {"pid": child.pid}).encode(), stale_seconds=30)
    alive = subprocess.Popen(["sleep", "30"])
    try:  # a live process whose start time differs from the holder's: the pid was reused
        assert may_take_over(json.dumps(json.loads(mine) | {"pid": alive.pid}).encode(), stale_seconds=30)
    finally:
        alive.kill()
        alive.wait()
    elsewhere = json.loads(mine) | {"host": "another-boot/pid:[1]", "pid": 1}
    assert not may_take_over(json.dumps(elsewhere).encode(), stale_seconds=30)  # cannot tell: wait it out
    assert may_take_over(b"not json", stale_seconds=30)

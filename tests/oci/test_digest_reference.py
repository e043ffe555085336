"""Digests and references: the grammar the registry and the builder both rely on."""

import pytest

from lamina.oci import (
    DigestError,
    ReferenceError,
    digest_of,
    is_valid_name,
    is_valid_tag,
    parse_digest,
    parse_reference,
)

SHA = "sha256:" + "a" * 64


def test_parse_digest_accepts_sha256_and_sha512() -> None:
    assert str(parse_digest(SHA)) == SHA
    assert parse_digest("sha512:" + "b" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        ":abc",
        "SHA256:" + "a" * 64,
    ],
)
def test_parse_digest_rejects_malformed(value: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_digest(value)
    assert not info.value.unsupported


def test_unknown_algorithm_is_unsupported_not_invalid() -> None:
    with pytest.raises(DigestError) as info:
        parse_digest("md5:" + "a" * 32)
    assert info.value.unsupported


def test_digest_of_and_verify() -> None:
    d = digest_of(b"hello")
    assert str(d) == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert d.verify(b"hello") and not d.verify(b"hellO")


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag"),
    [
        ("busybox", "docker.io", "library/busybox", "latest"),
        ("docker.io/busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("index.docker.io/user/app", "docker.io", "user/app", "latest"),
        ("localhost:5000/a/b:t", "localhost:5000", "a/b", "t"),
        ("localhost/app", "localhost", "app", "latest"),
        ("127.0.0.1:5000/app:cache", "127.0.0.1:5000", "app", "cache"),
        ("ghcr.io/o/r/sub:v1.2_x", "ghcr.io", "o/r/sub", "v1.2_x"),
        ("user/app", "docker.io", "user/app", "latest"),
    ],
)
def test_parse_reference_normalises_like_docker(text: str, registry: str, repo: str, tag: str) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repo, tag)


def test_reference_with_digest_uses_digest_for_manifest_lookup() -> None:
    ref = parse_reference(f"localhost:5000/app:v1@{SHA}")
    assert ref.tag == "v1" and ref.reference == SHA
    assert str(ref) == f"localhost:5000/app:v1@{SHA}"


@pytest.mark.parametrize("text", ["UPPER/case", "app:", "app@sha256:zz", "a//b", "-app", "app:-tag", " app"])
def test_parse_reference_rejects(text: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(text)


def test_names_and_tags_follow_the_distribution_spec() -> None:
    for good in ["a", "a/b", "a-b/c__d", "a.b/c-d-e", "a0/b1", "x--y"]:
        assert is_valid_name(good), good
    for bad in ["", "A", "a/", "/a", "a_", "a___b", "a..b", "a" * 256]:
        assert not is_valid_name(bad), bad
    assert is_valid_tag("v1.0_rc-1") and is_valid_tag("_x") and is_valid_tag("a" * 128)
    for bad in ["", ".a", "-a", "a" * 129, "a/b", "a:b"]:
        assert not is_valid_tag(bad), bad

"""Property-based fuzzing (hypothesis) of the parsers that read what clients send: manifests and indexes,
BuildKit cacheconfigs and image configs, digests, references, the JSON depth pre-check. Each may raise
only its documented exception (``FormatError``, ``DigestError``, ``ReferenceError``), never anything else,
and what it accepts round-trips. In CI the examples are derandomized (tests/reliability/conftest.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from lamina.oci import (
    CacheConfig,
    DigestError,
    FormatError,
    ImageConfig,
    ReferenceError,
    classify,
    exceeds_json_depth,
    is_valid_name,
    is_valid_tag,
    parse_digest,
    parse_manifest,
    parse_reference,
)
from lamina.oci import mediatypes as mt

D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64

VALID: list[dict[str, Any]] = [
    {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
     "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
     "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20, "annotations": {"a": "b"}}],
     "subject": {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 3}, "annotations": {"k": "v"}},
    {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
     "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 5,
                    "platform": {"architecture": "amd64", "os": "linux", "variant": "v8"}}]},
    {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_V2,
     "config": {"mediaType": mt.DOCKER_CONFIG, "digest": D1, "size": 10},
     "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": D2, "size": 20}]},
    {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/vnd.example+json",
     "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": D1, "size": 2, "data": "e30="},
     "layers": []},
]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=30), st.sampled_from([D1, "sha256:", "md5:00", mt.OCI_MANIFEST, "a/b", "", -1]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                           max_leaves=12)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated_manifests(draw: st.DrawFn) -> bytes:
    """A valid manifest with 1-3 places replaced by random JSON values or removed."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(doc).encode()


def _check_manifest(data: bytes, content_type: str | None) -> None:
    try:
        manifest = parse_manifest(data, content_type)
    except FormatError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line naming what is wrong
        return
    classify(manifest)
    again = parse_manifest(data, manifest.media_type)  # what was accepted reads the same the second time
    assert again == manifest


CONTENT_TYPES = [None, mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST_V2, "text/x; a=b"]


@given(mutated_manifests(), st.sampled_from(CONTENT_TYPES))
@example(b'{"schemaVersion": 2, "mediaType": []}', None)  # was a TypeError (a 500 on manifest PUT)
@example(b'{"schemaVersion": 2, "mediaType": {"a": 1}, "layers": []}', mt.OCI_MANIFEST)
def test_mutated_manifests_parse_or_raise_format_error(data: bytes, content_type: str | None) -> None:
    _check_manifest(data, content_type)


@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
@example(b"[" * 1100 + b"]" * 1100)
@example(b'{"schemaVersion": 2, "layers": ' + b"[" * 5000)
@example(b"\xff\xfe{}")
def test_arbitrary_bytes_parse_or_raise_format_error(data: bytes) -> None:
    _check_manifest(data, None)
    for parse in (CacheConfig.parse, ImageConfig.parse):
        with contextlib.suppress(FormatError):
            parse(data)


@given(st.one_of(st.text(max_size=80), st.from_regex(r"[a-z0-9]{1,8}:[0-9a-fA-F]{0,70}", fullmatch=True)))
@example(D1)
@example("sha512:" + "0" * 128)
def test_digest_parsing(text: str) -> None:
    try:
        digest = parse_digest(text)
    except DigestError as exc:
        assert text in str(exc) or "algorithm" in str(exc)
        return
    assert str(digest) == text


reference_parts = st.sampled_from(["localhost:5000/", "registry.example/", "[::1]:5000/", "a/", "A/", "-/", "", "/",
                                   "..", "busybox", "x_y", "x__y", "@", ":", ":latest", "@" + D1, "\x00", " ", "é"])


@given(st.one_of(st.text(max_size=120), st.lists(reference_parts, max_size=6).map("".join)))
@example("localhost:5000/team/app:v1@" + D1)
@example("a" * 300)
def test_reference_parsing(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ReferenceError as exc:
        assert str(exc).startswith("invalid reference")
        return
    assert is_valid_name(ref.repository) and (ref.tag is None or is_valid_tag(ref.tag))
    assert parse_reference(str(ref)) == ref  # what was accepted prints back to the same reference


@given(st.text(alphabet='[]{}"\\a,: ', max_size=200))
@example("[" * 65 + '"' + "a" * 26)  # an unterminated string after many brackets: seconds if the scan backtracks
@example("[" * 65 + '"' + "\\a" * 20)
def test_json_depth_precheck_is_linear(text: str) -> None:
    data = text.encode()
    start = time.perf_counter()
    exceeds_json_depth(data, 64)
    assert time.perf_counter() - start < 0.5, f"exceeds_json_depth took {time.perf_counter() - start:.1f} s"
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    assert exceeds_json_depth(data, 3) == (_depth(doc) > 3)  # exact on valid JSON


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0

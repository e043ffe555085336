"""JSON depth, measured before parsing (lamina.oci.jsondepth), and the places that parse JSON a client
pushed: manifest and config parsers answer FormatError instead of RecursionError, and a build cache's
inputs annotation (compressed JSON inside a manifest string) nested too deeply is left alone by the
cache prune instead of stopping the round."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from lamina.oci import CacheConfig, FormatError, ImageConfig, exceeds_json_depth, json_depth, parse_manifest
from lamina.registry.cacheprune import _filter_fingerprints

DEEP = b'{"schemaVersion": 2, "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b'"scalar"', 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": "[[[[{{{{"}]}', 3),  # brackets inside strings do not count
        (b'{"a": "quote \\" then [[[", "b": [[]]}', 3),  # nor after an escaped quote
        (b'[{"k": "\\\\"}, [[[]]]]', 4),  # an escaped backslash ends before the closing quote
        (DEEP, 1101),
    ],
)
def test_json_depth(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth
    assert json_depth(text.decode()) == depth
    assert exceeds_json_depth(text, depth - 1) if depth else not exceeds_json_depth(text, 0)
    assert not exceeds_json_depth(text, depth)


def test_json_depth_stops_early() -> None:
    assert json_depth(DEEP, stop_after=64) == 65


@pytest.mark.parametrize("parse", [parse_manifest, ImageConfig.parse, CacheConfig.parse])
def test_parsers_refuse_deep_json_with_a_format_error(parse: object) -> None:
    with pytest.raises(FormatError, match="nests JSON too deeply to parse"):
        parse(b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")  # type: ignore[operator]


def test_cache_prune_leaves_a_deeply_nested_inputs_annotation_alone() -> None:
    deep = base64.b64encode(zlib.compress(b'{"k": ' + b"[" * 5000 + b"]" * 5000 + b"}")).decode()
    assert _filter_fingerprints(deep, {"k"}) is None
    shallow = base64.b64encode(zlib.compress(json.dumps({"k": [1], "drop": [2]}).encode())).decode()
    kept = _filter_fingerprints(shallow, {"k"})
    assert kept is not None and json.loads(zlib.decompress(base64.b64decode(kept))) == {"k": [1]}

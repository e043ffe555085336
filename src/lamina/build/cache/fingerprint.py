"""Input fingerprints that travel with a remote cache, so "why was this step not cached?" has an answer
on a CI runner whose local state is empty.

BuildKit's cacheconfig stores only keys. Lamina adds one manifest annotation, ``dev.lamina.cache.inputs``
(BuildKit and registries ignore it): base64 of zlib-compressed JSON ``{record key: fingerprint}``. A
fingerprint is the step's inputs document (:mod:`lamina.build.cachekey`) with every value replaced by a
short hash — ``env`` as ``NAME=<hash of value>`` — so build args and the like never leave the machine
in clear text, yet :func:`~lamina.build.cachekey.describe_difference` still names the first input that
differs (``env/arg X changed``, ``copied files changed in the context``, ``argv changed`` ...).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from typing import Any

from lamina.build.cachekey import describe_difference
from lamina.oci import Digest

__all__ = ["INPUTS_ANNOTATION", "Fingerprints", "decode", "encode", "fingerprint"]

INPUTS_ANNOTATION = "dev.lamina.cache.inputs"
_PLAIN = ("op", "parent", "v")  # structure, not content: kept as is


def _h(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(inputs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if name in _PLAIN:
            out[name] = value
        elif name == "env" and isinstance(value, list):
            out[name] = [f"{item.partition('=')[0]}={_h(item.partition('=')[2])}" for item in value]
        else:
            out[name] = _h(value)
    return out


def encode(prints: Mapping[Digest, Mapping[str, Any]]) -> str:
    doc = {str(key): dict(value) for key, value in sorted(prints.items())}
    return base64.b64encode(zlib.compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), 9)).decode()


def decode(text: str) -> dict[str, dict[str, Any]]:
    """The fingerprints in an annotation; anything unreadable is simply no explanation ({})."""
    try:
        doc = json.loads(zlib.decompress(base64.b64decode(text, validate=True), bufsize=1 << 16))
    except (ValueError, zlib.error):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}


class Fingerprints:
    """The nearest imported record on the same parent, and the first input that differs from it."""

    def __init__(self, prints: Mapping[str, Mapping[str, Any]]) -> None:
        self._prints = dict(prints)
        self._by_parent: dict[str, list[Mapping[str, Any]]] = {}
        for _key, value in sorted(prints.items()):
            self._by_parent.setdefault(str(value.get("parent")), []).append(value)

    def explain(self, slot: str, inputs: Mapping[str, Any]) -> str | None:
        mine = fingerprint(inputs)
        candidates = self._by_parent.get(slot)
        if not candidates:
            return self._moved(mine)

        def distance(other: Mapping[str, Any]) -> tuple[int, int]:
            fields = set(other) | set(mine)
            return (other.get("op") != mine.get("op"), sum(other.get(f) != mine.get(f) for f in fields))

        nearest = min(candidates, key=distance)
        return describe_difference(dict(nearest), mine)

    def _moved(self, mine: Mapping[str, Any]) -> str | None:
        """No record on this parent: is the very same step cached on another parent?"""
        same = [
            other for other in self._prints.values()
            if {k: v for k, v in other.items() if k != "parent"} == {k: v for k, v in mine.items() if k != "parent"}
        ]
        if not same:
            return None
        parents = [self._prints.get(str(other.get("parent"))) or {} for other in same]
        if any(parent.get("op") == "image" for parent in parents):
            return "base image changed (this step is cached on another base image digest)"
        return "parent step changed (this step is cached on another parent)"

"""BuildKit-shaped remote caches whose blobs exist: the reference captures, re-pointed at real layers.

``tests/data/buildkit-cache`` holds what BuildKit v0.32 wrote, but not its layer bytes. Here each
of its 8 layers is replaced by a small deterministic gzip layer we can push, the cacheconfig is
rewritten to name the new digests (then sorted as BuildKit's marshaller sorts it), and the three
manifest forms keep the captures' shape and annotations (``buildkit/createdat``,
``containerd.io/uncompressed`` = the new layer's diffID):

- ``image_manifest``: ``image-manifest=true,oci-mediatypes=true`` — an OCI image manifest, config = cacheconfig;
- ``legacy_oci_index``: ``image-manifest=false,oci-mediatypes=true`` — an OCI index listing the blobs;
- ``legacy_docker_list``: ``oci-mediatypes=false`` — the same as a Docker manifest list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from lamina.oci import CacheConfig, normalize
from lamina.oci import mediatypes as mt

from .images import Blob, Layer, layer_from_files

__all__ = ["REFERENCE_DIR", "BuildkitCache", "buildkit_cache"]

from helpers.reference import REFERENCE_DIR

UNCOMPRESSED = "containerd.io/uncompressed"


@dataclass(frozen=True)
class BuildkitCache:
    layers: tuple[Layer, ...]  # sorted by digest, as in the manifests
    cacheconfig: Blob
    image_manifest: Blob
    legacy_oci_index: Blob
    legacy_docker_list: Blob

    def blobs(self) -> list[Blob]:
        """What an exporter uploads before the manifest: every layer, then the cacheconfig."""
        return [*self.layers, self.cacheconfig]


def _reference(name: str) -> dict:
    return json.loads((REFERENCE_DIR / name).read_text())


def _legacy(reference: dict, layers: tuple[Layer, ...], cacheconfig: Blob) -> Blob:
    """The legacy index of ``reference`` with its layer entries re-pointed, position for position."""
    entries = [m for m in reference["manifests"] if m["mediaType"] != mt.BUILDKIT_CACHE_CONFIG]
    assert len(entries) == len(layers), "the captures list one entry per layer"
    manifests = []
    for entry, layer in zip(entries, layers, strict=True):
        annotations = {**entry["annotations"], UNCOMPRESSED: layer.diff_id}
        manifests.append({"mediaType": entry["mediaType"], "digest": layer.digest, "size": layer.size,
                          "annotations": annotations})  # fmt: skip
    manifests.append(cacheconfig.descriptor())
    doc = {"schemaVersion": 2, "mediaType": reference["mediaType"], "manifests": manifests}
    return Blob(reference["mediaType"], json.dumps(doc, indent=2).encode())


@cache
def buildkit_cache() -> BuildkitCache:
    """The reference cache with pushable layers (computed once; every call returns the same bytes)."""
    manifest = _reference("cache-manifest.image-manifest-true.json")
    raw = (REFERENCE_DIR / "cacheconfig.raw.json").read_bytes()
    created = {layer["digest"]: layer["annotations"] for layer in manifest["layers"]}
    new: dict[str, Layer] = {}
    for i, old in enumerate(sorted(created)):
        new[old] = layer_from_files({f"step-{i}/out.txt": f"buildkit cache layer {i}\n".encode() * (i + 1)})
    for old, layer in new.items():
        raw = raw.replace(old.encode(), layer.digest.encode())
    cacheconfig = Blob(mt.BUILDKIT_CACHE_CONFIG, normalize(CacheConfig.parse(raw)).to_bytes())
    layers = tuple(sorted(new.values(), key=lambda layer: layer.digest))
    old_of = {layer.digest: old for old, layer in new.items()}
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": cacheconfig.descriptor(),
        "layers": [
            layer.descriptor(annotations={**created[old_of[layer.digest]], UNCOMPRESSED: layer.diff_id})
            for layer in layers
        ],
    }
    image_manifest = Blob(mt.OCI_MANIFEST, json.dumps(doc, indent=2).encode())
    return BuildkitCache(
        layers=layers,
        cacheconfig=cacheconfig,
        image_manifest=image_manifest,
        legacy_oci_index=_legacy(_reference("cache-manifest.legacy-oci-index.json"), layers, cacheconfig),
        legacy_docker_list=_legacy(_reference("cache-manifest.legacy-docker-list.json"), layers, cacheconfig),
    )

"""Pure OCI data: digests, media types, descriptors, manifests, configs, BuildKit cacheconfig, references.

No I/O and no imports from the rest of lamina (enforced by an import-linter contract).
"""

from . import mediatypes
from .cacheconfig import CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult, normalize
from .config import ContainerConfig, HistoryEntry, ImageConfig
from .descriptor import Descriptor, FormatError, Platform
from .digest import Digest, DigestError, digest_of, parse_digest
from .jsondepth import DEFAULT_MAX_JSON_DEPTH, exceeds_json_depth, json_depth
from .manifest import (
    ImageIndex,
    ImageManifest,
    Manifest,
    ManifestKind,
    canonical_json,
    classify,
    is_legacy_buildkit_cache,
    parse_manifest,
)
from .platforms import format_platform, host_platform, normalize_platform, parse_platform, parse_platforms
from .reference import Reference, ReferenceError, is_valid_name, is_valid_tag, parse_reference

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "CacheConfig",
    "CacheInput",
    "CacheLayer",
    "CacheRecord",
    "CacheResult",
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "DigestError",
    "FormatError",
    "HistoryEntry",
    "ImageConfig",
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "ManifestKind",
    "Platform",
    "Reference",
    "ReferenceError",
    "canonical_json",
    "classify",
    "digest_of",
    "exceeds_json_depth",
    "format_platform",
    "host_platform",
    "is_legacy_buildkit_cache",
    "is_valid_name",
    "is_valid_tag",
    "json_depth",
    "mediatypes",
    "normalize",
    "normalize_platform",
    "parse_digest",
    "parse_manifest",
    "parse_platform",
    "parse_platforms",
    "parse_reference",
]

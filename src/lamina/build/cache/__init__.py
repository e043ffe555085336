"""The build cache: lazy results by cache key, the local index, and the seams for remote caches."""

from lamina.build.cache.base import CachedResult, CacheExporter, CacheImporter, LayerRef, MissExplainer
from lamina.build.cache.local import LocalCache

__all__ = ["CacheExporter", "CacheImporter", "CachedResult", "LayerRef", "LocalCache", "MissExplainer"]

"""``--cache-to type=inline``: the cacheconfig embedded in the pushed image's config, as BuildKit does it.

The image config gets ``"moby.buildkit.cache.v0": "<base64 of the cacheconfig JSON>"`` (Go's encoding of a
``[]byte``); its layers are the image's own layers, so only ``mode=min`` exists. ``--cache-from
type=registry,ref=<that image>`` reads it back (:func:`lamina.build.cache.importer.inline_config`).
"""

from __future__ import annotations

import base64
from dataclasses import replace

from lamina.build.cache.base import CachedResult
from lamina.build.cache.importer import INLINE_CACHE_KEY
from lamina.build.cache.registry import RegistryCacheExporter
from lamina.oci import ImageConfig

__all__ = ["InlineCacheExporter"]


class InlineCacheExporter(RegistryCacheExporter):
    """Plans at ``finalize``; the builder then calls :meth:`embed` on the image config before writing it."""

    config_bytes: bytes | None = None

    async def finalize(self, target: CachedResult, *more: CachedResult) -> None:
        """Plan the cache of one image (each platform's image of a multi-platform build embeds its own)."""
        if more:
            raise ValueError("an inline cache belongs to one image: finalize it once per platform's image")
        export = self.plan(target)
        if export is None:
            self.progress.message("inline cache skipped: nothing to export")
            return
        image_blobs = {layer.descriptor.digest for layer in target.layers}
        if any(layer.descriptor.digest not in image_blobs for layer in export.layers):
            raise AssertionError("inline cache names a blob the image does not carry")  # mode=min guarantees it
        self.config_bytes = export.config_bytes
        self.summary.records = len(export.config.records)
        self.summary.layers = len(export.layers)

    def embed(self, config: ImageConfig) -> ImageConfig:
        if self.config_bytes is None:
            return config
        extra = {**config.extra, INLINE_CACHE_KEY: base64.b64encode(self.config_bytes).decode()}
        self.progress.message(f"inline cache: {self.summary.records} records, {self.summary.layers} layers")
        return replace(config, extra=extra)

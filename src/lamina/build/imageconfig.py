"""Image config and manifest assembly for a built stage (pure: no I/O), in BuildKit's shape.

The config inherits the base image's history and diff_ids, appends one history entry per step
(``comment: buildkit.dockerfile.v0``; ``empty_layer`` for config-only steps) and takes its container
config (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal, Healthcheck,
OnBuild, Shell) from the stage as the frontend computed it. Times come from the layers' creation
times, so a fully cached rebuild gives the same image digest; with ``SOURCE_DATE_EPOCH`` every time
this build adds is the epoch, so two cold builds do too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from lamina.build.cache.base import LayerRef
from lamina.oci import ContainerConfig, Descriptor, HistoryEntry, ImageConfig, ImageManifest, Platform, digest_of
from lamina.oci import mediatypes as mt

__all__ = ["HISTORY_COMMENT", "StepOutcome", "build_image_config", "epoch_time", "image_manifest", "oci_layer"]

HISTORY_COMMENT = "buildkit.dockerfile.v0"


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """One step of a stage as the exporter sees it: its history text and its layer (None = config only)."""

    created_by: str
    layer: LayerRef | None


def epoch_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_image_config(
    base: ImageConfig | None,
    platform: Platform,
    container: ContainerConfig,
    steps: Sequence[StepOutcome],
    *,
    labels: dict[str, str] | None = None,
    source_date_epoch: int | None = None,
    author: str | None = None,
) -> ImageConfig:
    """The config of a stage built on ``base`` (``None`` = scratch) by ``steps``."""
    epoch = epoch_time(source_date_epoch) if source_date_epoch is not None else None
    layer_times = [s.layer.created for s in steps if s.layer is not None and s.layer.created]
    fallback = (base.created if base else None) or (layer_times[0] if layer_times else None) or epoch
    history = list(base.history) if base else []
    diff_ids = list(base.diff_ids) if base else []
    previous = layer_times[0] if layer_times else fallback
    for step in steps:
        if step.layer is not None:
            created = epoch or step.layer.created or previous
            previous = step.layer.created or previous
            diff_ids.append(step.layer.diff_id)
            history.append(HistoryEntry(created=created, created_by=step.created_by, comment=HISTORY_COMMENT))
        else:
            history.append(
                HistoryEntry(
                    created=epoch or previous, created_by=step.created_by, comment=HISTORY_COMMENT, empty_layer=True
                )
            )
    if labels:
        merged = dict(container.get("Labels") or {})
        merged.update(labels)
        container = container.with_(Labels=merged)
    created = epoch or (max(layer_times) if layer_times else fallback)
    return ImageConfig(
        architecture=platform.architecture,
        os=platform.os,
        variant=platform.variant,
        created=created,
        config=container,
        diff_ids=tuple(diff_ids),
        history=tuple(history),
        extra={"author": author} if author else {},
    )


def oci_layer(descriptor: Descriptor) -> Descriptor:
    """The descriptor as an OCI manifest lists it (Docker's gzip layer type is the same bytes)."""
    if descriptor.media_type == mt.DOCKER_LAYER_GZIP:
        return replace(descriptor, media_type=mt.OCI_LAYER_GZIP, annotations=None, urls=None, platform=None)
    return Descriptor(descriptor.media_type, descriptor.digest, descriptor.size)


def image_manifest(config: bytes, layers: Sequence[LayerRef]) -> ImageManifest:
    return ImageManifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)),
        layers=tuple(oci_layer(layer.descriptor) for layer in layers),
    )

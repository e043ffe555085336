"""Image config assembly: BuildKit's history/rootfs shape, inherited base, SOURCE_DATE_EPOCH."""

from __future__ import annotations

import json

from helpers.reference import REFERENCE_DIR
from lamina.build.cache import LayerRef
from lamina.build.imageconfig import HISTORY_COMMENT, StepOutcome, build_image_config, image_manifest
from lamina.oci import ContainerConfig, Descriptor, HistoryEntry, ImageConfig, Platform, digest_of
from lamina.oci import mediatypes as mt

REFERENCE = REFERENCE_DIR
AMD64 = Platform("amd64", "linux")


def _layer(name: str, created: str, media_type: str = mt.OCI_LAYER_GZIP) -> LayerRef:
    return LayerRef(Descriptor(media_type, digest_of(name.encode()), 10), digest_of(b"diff-" + name.encode()), created)


BASE = ImageConfig(
    created="2024-01-01T00:00:00Z",
    config=ContainerConfig({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
    diff_ids=(digest_of(b"base"),),
    history=(HistoryEntry(created="2024-01-01T00:00:00Z", created_by="base"),),
)


def test_history_and_rootfs_follow_buildkit() -> None:
    steps = [
        StepOutcome("ENV A=1", None),
        StepOutcome("WORKDIR /app", _layer("w", "2026-01-01T00:00:01Z")),
        StepOutcome("RUN /bin/sh -c make # buildkit", _layer("r", "2026-01-01T00:00:05Z")),
        StepOutcome('CMD ["sh"]', None),
    ]
    container = ContainerConfig({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/app"})
    config = build_image_config(BASE, AMD64, container, steps, labels={"org.example": "x"})
    doc = config.dump()
    assert doc["rootfs"]["diff_ids"] == [str(digest_of(b"base")), *(str(s.layer.diff_id) for s in steps[1:3])]
    assert [h.get("empty_layer", False) for h in doc["history"]] == [False, True, False, False, True]
    assert all(h["comment"] == HISTORY_COMMENT for h in doc["history"][1:])
    assert doc["history"][0] == {"created": "2024-01-01T00:00:00Z", "created_by": "base"}
    assert doc["created"] == "2026-01-01T00:00:05Z" == doc["history"][-1]["created"]
    assert doc["config"]["Labels"] == {"org.example": "x"} and doc["config"]["WorkingDir"] == "/app"
    reference = json.loads((REFERENCE / "image-config.json").read_text())
    assert set(doc) == set(reference)


def test_source_date_epoch_pins_every_new_time() -> None:
    steps = [StepOutcome("RUN x", _layer("r", "2026-05-05T00:00:00Z")), StepOutcome("CMD x", None)]
    config = build_image_config(BASE, AMD64, ContainerConfig({}), steps, source_date_epoch=0)
    assert config.created == "1970-01-01T00:00:00Z"
    assert [h.created for h in config.history[1:]] == ["1970-01-01T00:00:00Z"] * 2
    assert config.history[0].created == "2024-01-01T00:00:00Z"


def test_scratch_has_only_its_own_layers() -> None:
    config = build_image_config(None, Platform("arm64", "linux", "v8"), ContainerConfig({}),
                                [StepOutcome("COPY a /", _layer("c", "2026-01-01T00:00:00Z"))])
    assert config.architecture == "arm64" and config.variant == "v8" and len(config.diff_ids) == 1


def test_manifest_lists_docker_layers_as_oci() -> None:
    layers = [_layer("a", "t", mt.DOCKER_LAYER_GZIP), _layer("b", "t")]
    manifest = image_manifest(b"{}", layers)
    assert [d.media_type for d in manifest.layers] == [mt.OCI_LAYER_GZIP] * 2
    assert manifest.config.digest == digest_of(b"{}") and manifest.config.media_type == mt.OCI_CONFIG


def test_map_fields_are_written_with_sorted_keys_as_go_does() -> None:
    container = ContainerConfig({
        "Labels": {"multi": "a b c", "empty": "", "com.example": "x"},
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}},
        "Volumes": {"/z": {}, "/a": {}},
        "Env": ["B=1", "A=2"],  # a list keeps its order
    })
    dumped = build_image_config(BASE, AMD64, container, []).dump()["config"]
    assert list(dumped["Labels"]) == ["com.example", "empty", "multi"]
    assert list(dumped["ExposedPorts"]) == ["53/udp", "80/tcp", "8000/tcp"]
    assert list(dumped["Volumes"]) == ["/a", "/z"]
    assert dumped["Env"] == ["B=1", "A=2"]
    assert list(dumped) == ["ExposedPorts", "Env", "Volumes", "Labels"]

"""The image configuration (OCI image-spec config.md; Docker's container config is the same JSON).

Only the fields lamina reads or writes are typed; everything else a base image carries is kept in
``extra`` and written back, so inheriting a config never drops a field we do not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from .descriptor import FormatError
from .digest import Digest, DigestError, parse_digest

__all__ = ["ContainerConfig", "HistoryEntry", "ImageConfig"]

# Field names inside "config", in the order Docker/BuildKit write them.
_CONTAINER_FIELDS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
)
# Fields that are Go maps in Docker's and BuildKit's structs: encoding/json writes them with sorted keys.
_MAP_FIELDS = frozenset({"ExposedPorts", "Volumes", "Labels"})


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """The ``config`` object: what a runtime needs to start the image. Values as JSON types."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def with_(self, **changes: Any) -> ContainerConfig:
        values = dict(self.values)
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        return ContainerConfig(values)

    @property
    def env(self) -> list[str]:
        return list(self.values.get("Env") or [])

    def dump(self) -> dict[str, Any]:
        ordered = {k: self.values[k] for k in _CONTAINER_FIELDS if self.values.get(k) not in (None, "", [], {})}
        for key in _MAP_FIELDS & ordered.keys():
            if isinstance(ordered[key], dict):
                ordered[key] = dict(sorted(ordered[key].items()))
        ordered.update({k: v for k, v in self.values.items() if k not in _CONTAINER_FIELDS and v is not None})
        return ordered


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One ``history`` entry of an OCI image config (image-spec config.md): how one layer, or none, was made."""

    created: str | None = None
    created_by: str | None = None
    comment: str | None = None
    empty_layer: bool = False
    author: str | None = None

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        if self.created_by:
            out["created_by"] = self.created_by
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An OCI image configuration (image-spec config.md): platform, runtime ``config``, ``rootfs.diff_ids``, history."""

    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    created: str | None = None
    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"image config is not valid JSON: {exc}") from None
        except RecursionError:
            raise FormatError("image config nests JSON too deeply to parse") from None
        if not isinstance(doc, dict):
            raise FormatError("image config must be a JSON object")
        rootfs = doc.get("rootfs") or {"type": "layers", "diff_ids": []}
        if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids", []), list):
            raise FormatError("image config: rootfs.diff_ids must be an array")
        try:
            diff_ids = tuple(parse_digest(d) for d in rootfs.get("diff_ids") or [])
        except DigestError as exc:
            raise FormatError(f"image config rootfs.diff_ids: {exc}") from None
        history = []
        for h in doc.get("history") or []:
            if not isinstance(h, dict):
                raise FormatError("image config: history entries must be objects")
            history.append(
                HistoryEntry(
                    created=h.get("created"),
                    created_by=h.get("created_by"),
                    comment=h.get("comment"),
                    empty_layer=bool(h.get("empty_layer")),
                    author=h.get("author"),
                )
            )
        container = doc.get("config") or {}
        if not isinstance(container, dict):
            raise FormatError("image config: 'config' must be an object")
        known = {"architecture", "os", "variant", "created", "config", "rootfs", "history"}
        return cls(
            architecture=str(doc.get("architecture") or ""),
            os=str(doc.get("os") or ""),
            variant=doc.get("variant"),
            created=doc.get("created"),
            config=ContainerConfig(dict(container)),
            diff_ids=diff_ids,
            history=tuple(history),
            extra={k: v for k, v in doc.items() if k not in known},
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture}
        out["config"] = self.config.dump()
        if self.created:
            out["created"] = self.created
        out["history"] = [h.dump() for h in self.history]
        out["os"] = self.os
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.variant:
            out["variant"] = self.variant
        out.update(self.extra)
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.dump(), separators=(",", ":")).encode()

    def with_layer(self, diff_id: Digest, entry: HistoryEntry) -> ImageConfig:
        return replace(self, diff_ids=(*self.diff_ids, diff_id), history=(*self.history, entry))

    def with_history(self, entry: HistoryEntry) -> ImageConfig:
        return replace(self, history=(*self.history, entry))

"""Compare two image dumps (tests/helpers/parity_dump.py) the way the parity corpus is meant to be read.

What counts (everything BuildKit's output pins down except what depends on mtimes):
- manifest, config and index documents field by field, *including key order* (a config whose keys
  come in another order is another blob, so another digest); descriptor ``digest``/``size`` and the
  config's ``rootfs.diff_ids`` are masked unless ``strict``; ``created`` is never compared;
- layers: count, ``mediaType``, ``tar_tail_blocks`` and every tar entry in tar order (name as stored,
  type, mode, owner, size, content sha256, link name, header format, PAX keys); with ``strict`` also
  digest, size, diff_id and tar_size;
- the flattened root filesystem path by path.

``compare`` returns sections of difference lines; ``render`` prints them bounded (the first N lines
overall, each naming the section and the JSON path, tar entry or file path it is about).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from .parity_dump import Dump, ImageDump, Json

__all__ = ["Section", "compare", "compare_images", "render"]

MASKED_DESCRIPTOR_KEYS = ("digest", "size")
STRICT_LAYER_KEYS = ("digest", "size", "diff_id", "tar_size")


@dataclass
class Section:
    """Differences in one part (``linux_amd64 config``, ``index``, ...); empty ``lines`` = identical."""

    name: str
    lines: list[str] = field(default_factory=list)


def _mask_descriptors(doc: Any) -> Any:
    """Descriptor digests and sizes -> placeholders (they follow from mtimes in layer tars)."""
    if isinstance(doc, dict):
        is_descriptor = "mediaType" in doc and "digest" in doc
        return {
            key: f"<{key}>" if is_descriptor and key in MASKED_DESCRIPTOR_KEYS else _mask_descriptors(value)
            for key, value in doc.items()
        }
    if isinstance(doc, list):
        return [_mask_descriptors(item) for item in doc]
    return doc


def _mask_config(config: Json) -> Json:
    out = {key: value for key, value in config.items() if key != "created"}
    if isinstance(out.get("history"), list):
        out["history"] = [{k: v for k, v in step.items() if k != "created"} for step in out["history"]]
    rootfs = out.get("rootfs")
    if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list):
        out["rootfs"] = dict(rootfs, diff_ids=["<diff_id>"] * len(rootfs["diff_ids"]))
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _diff_json(mine: Any, expected: Any, path: str, out: list[str]) -> None:
    """Recursive difference of two JSON values; dict key order counts."""
    where = path or "."
    if isinstance(mine, dict) and isinstance(expected, dict):
        if list(mine) != list(expected) and set(mine) == set(expected):
            out.append(f"{where}: same keys, other order: got {list(mine)}, expected {list(expected)}")
        for key in [*mine, *(k for k in expected if k not in mine)]:
            sub = f"{path}.{key}" if path else key
            if key not in expected:
                out.append(f"{sub}: unexpected {_json(mine[key])}")
            elif key not in mine:
                out.append(f"{sub}: missing, expected {_json(expected[key])}")
            else:
                _diff_json(mine[key], expected[key], sub, out)
    elif isinstance(mine, list) and isinstance(expected, list):
        for i in range(max(len(mine), len(expected))):
            sub = f"{path}[{i}]"
            if i >= len(expected):
                out.append(f"{sub}: unexpected {_json(mine[i])}")
            elif i >= len(mine):
                out.append(f"{sub}: missing, expected {_json(expected[i])}")
            else:
                _diff_json(mine[i], expected[i], sub, out)
    elif mine != expected or type(mine) is not type(expected):
        out.append(f"{where}: got {_json(mine)}, expected {_json(expected)}")


def _diff_layers(mine: list[Json], expected: list[Json], strict: bool, out: list[str]) -> None:
    if len(mine) != len(expected):
        out.append(f"layer count: got {len(mine)}, expected {len(expected)}")
    keys = ("mediaType", "tar_tail_blocks", *(STRICT_LAYER_KEYS if strict else ()))
    for i, (got, want) in enumerate(zip(mine, expected, strict=False)):
        for key in keys:
            if got.get(key) != want.get(key):
                out.append(f"layer {i} {key}: got {got.get(key)}, expected {want.get(key)}")
        got_entries = [json.dumps(e, sort_keys=True, ensure_ascii=False) for e in got["entries"]]
        want_entries = [json.dumps(e, sort_keys=True, ensure_ascii=False) for e in want["entries"]]
        if got_entries != want_entries:
            step = (want.get("created_by") or got.get("created_by") or "?")[:70]
            out.append(
                f"layer {i} ({step}): entries differ, got {len(got_entries)}, expected {len(want_entries)}"
                " ('-' got, '+' expected):"
            )
            for line in difflib.unified_diff(got_entries, want_entries, lineterm="", n=0):
                if not line.startswith(("---", "+++", "@@")):
                    out.append("    " + line)


def _diff_rootfs(mine: dict[str, Json], expected: dict[str, Json], out: list[str]) -> None:
    for path in sorted(set(mine) | set(expected)):
        if path not in expected:
            out.append(f"{path}: unexpected {_json(mine[path])}")
        elif path not in mine:
            out.append(f"{path}: missing, expected {_json(expected[path])}")
        elif mine[path] != expected[path]:
            got, want = mine[path], expected[path]
            fields = [k for k in [*got, *(k for k in want if k not in got)] if got.get(k) != want.get(k)]
            detail = "; ".join(f"{k} got {_json(got.get(k))}, expected {_json(want.get(k))}" for k in fields)
            out.append(f"{path}: {detail}")


def compare_images(mine: ImageDump, expected: ImageDump, *, strict: bool = False, prefix: str = "") -> list[Section]:
    """The four sections (manifest, config, layers, rootfs) of one platform's image."""
    manifest_a, manifest_b = mine.manifest, expected.manifest
    config_a, config_b = mine.config, expected.config
    if not strict:
        manifest_a, manifest_b = _mask_descriptors(manifest_a), _mask_descriptors(manifest_b)
        config_a, config_b = _mask_config(config_a), _mask_config(config_b)
    sections = [Section(f"{prefix}manifest"), Section(f"{prefix}config"), Section(f"{prefix}layers"),
                Section(f"{prefix}rootfs")]
    _diff_json(manifest_a, manifest_b, "", sections[0].lines)
    _diff_json(config_a, config_b, "", sections[1].lines)
    _diff_layers(mine.layers, expected.layers, strict, sections[2].lines)
    _diff_rootfs(mine.rootfs, expected.rootfs, sections[3].lines)
    return sections


def compare(mine: Dump, expected: Dump, *, strict: bool = False) -> list[Section]:
    """Every difference between ``mine`` (what lamina built) and ``expected`` (what BuildKit built)."""
    sections: list[Section] = []
    if (mine.index is None) != (expected.index is None):
        kind = {True: "a single image", False: "an image index"}
        sections.append(Section("index", [
            f"got {kind[mine.index is None]}, expected {kind[expected.index is None]}"
        ]))
    elif mine.index is not None and expected.index is not None:
        index = Section("index")
        if strict:
            _diff_json(mine.index, expected.index, "", index.lines)
        else:
            _diff_json(_mask_descriptors(mine.index), _mask_descriptors(expected.index), "", index.lines)
        sections.append(index)
    for key in sorted(set(mine.images) | set(expected.images)):
        if key not in expected.images:
            sections.append(Section(key, ["platform not expected"]))
        elif key not in mine.images:
            sections.append(Section(key, ["platform missing"]))
        else:
            sections += compare_images(mine.images[key], expected.images[key], strict=strict, prefix=f"{key} ")
    return sections


def render(sections: list[Section], max_lines: int = 40) -> str:
    """A bounded report: each differing section's count and its lines, ``max_lines`` lines in all."""
    total = sum(len(s.lines) for s in sections)
    if total == 0:
        return "identical"
    out = [f"{total} difference line(s)"]
    budget = max_lines
    for section in sections:
        if not section.lines:
            continue
        out.append(f"== {section.name}: {len(section.lines)}")
        shown = section.lines[: max(budget, 0)]
        out += ["  " + line for line in shown]
        budget -= len(shown)
        if len(shown) < len(section.lines):
            out.append(f"  ... {len(section.lines) - len(shown)} more in this section")
    return "\n".join(out)

"""Dump an OCI image layout into the parity corpus's JSON form (tests/data/parity/*/expected/).

An image becomes four documents, the same shapes the corpus holds for what BuildKit v0.32.2 built:

- ``manifest``: the image manifest as stored (key order kept);
- ``config``: the image config without the top-level ``created`` and without ``history[].created``;
- ``layers``: per layer its descriptor fields, ``diff_id``, ``tar_size``, ``tar_tail_blocks`` (512-byte
  blocks after the last member: the end-of-archive marker plus any record padding), ``created_by`` (the
  history step that made it) and its tar entries in tar order — name exactly as stored (directories keep
  their trailing ``/``), type, mode, owner, content size and sha256, link name, and where present
  uname/gname, device numbers, xattrs, non-time PAX record keys (``pax``) and ``header`` when the header is
  not POSIX ustar;
- ``rootfs``: the flattened filesystem (layers applied in order, whiteouts honoured, hardlinked paths
  carrying ``links``, directories no layer holds but extraction creates marked ``implicit``).

Times are never recorded. Stdlib only, so ``tests/helpers/parity_run.py`` runs without the test extras.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Dump", "ImageDump", "dump_layout", "flatten_layers", "layer_entries", "load_dump", "platform_key"]

INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
REF_NAME = "org.opencontainers.image.ref.name"
TIME_PAX_KEYS = frozenset({"mtime", "atime", "ctime", "LIBARCHIVE.creationtime"})
ENTRY_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

Json = dict[str, Any]


@dataclass
class ImageDump:
    """One platform's image in dump form."""

    manifest: Json
    config: Json
    layers: list[Json]
    rootfs: dict[str, Json]


@dataclass
class Dump:
    """A dumped layout: ``index`` is the OCI index document for a multi-platform image, else None;
    ``images`` maps ``os_arch[_variant]`` to each image."""

    index: Json | None
    images: dict[str, ImageDump] = field(default_factory=dict)


def platform_key(platform: Json | None) -> str:
    """``{"os": "linux", "architecture": "arm", "variant": "v7"}`` -> ``linux_arm_v7``."""
    if not platform:
        return "unknown"
    parts = [platform.get("os") or "unknown", platform.get("architecture") or "unknown"]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "_".join(parts)


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, _, encoded = digest.partition(":")
    return (layout / "blobs" / algorithm / encoded).read_bytes()


def _json_blob(layout: Path, digest: str) -> Json:
    doc = json.loads(_blob(layout, digest))
    if not isinstance(doc, dict):
        raise ValueError(f"{layout}: blob {digest} is not a JSON object")
    return doc


def _uncompress(data: bytes, digest: str) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        raise ValueError(f"layer {digest} is zstd-compressed: build with --compression gzip to dump it")
    return data


def _stored_name(member: tarfile.TarInfo, tar: bytes) -> str:
    """The member name as written (tarfile drops a directory's trailing slash): PAX ``path``, a GNU
    ``L`` long name, or the ustar prefix + name fields of the header itself."""
    if "path" in member.pax_headers:
        return member.pax_headers["path"]
    header_at = member.offset_data - 512
    pos, long_name = member.offset, None
    while pos < header_at:  # extended headers before the member's own header
        block = tar[pos : pos + 512]
        size = tarfile.nti(block[124:136])
        if block[156:157] == b"L":
            long_name = tar[pos + 512 : pos + 512 + size].rstrip(b"\0").decode("utf-8", "surrogateescape")
        pos += 512 + (size + 511) // 512 * 512
    if long_name is not None:
        return long_name
    header = tar[header_at : member.offset_data]
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:263] == b"ustar\0" else b""
    return (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")


def _header_format(member: tarfile.TarInfo, tar: bytes) -> str:
    magic = tar[member.offset_data - 512 + 257 : member.offset_data - 512 + 265]
    if magic == b"ustar\x0000":
        return "ustar"
    if magic == b"ustar  \0":
        return "gnu"
    return "v7" if not magic.strip(b"\0") else repr(magic)


def _xattr_text(value: str | bytes) -> str:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + raw.hex()
    return text if text.isprintable() else "hex:" + raw.hex()


def _entry(member: tarfile.TarInfo, archive: tarfile.TarFile, tar: bytes) -> Json:
    kind = ENTRY_TYPES.get(member.type, f"other:{member.type!r}")
    entry: Json = {
        "name": _stored_name(member, tar),
        "type": kind,
        "mode": f"{member.mode:04o}",
        "uid": member.uid,
        "gid": member.gid,
    }
    if member.uname:
        entry["uname"] = member.uname
    if member.gname:
        entry["gname"] = member.gname
    if kind == "file":
        content = archive.extractfile(member)
        entry["size"] = member.size
        entry["sha256"] = hashlib.sha256(content.read() if content else b"").hexdigest()
    elif member.size:
        entry["size"] = member.size
    if member.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        entry["linkname"] = member.linkname
    if member.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        entry["devmajor"], entry["devminor"] = member.devmajor, member.devminor
    xattrs: dict[str, str] = {}
    pax: list[str] = []
    for key, value in sorted(member.pax_headers.items()):
        if key.startswith("SCHILY.xattr."):
            xattrs[key.removeprefix("SCHILY.xattr.")] = _xattr_text(value)
        elif key.startswith("LIBARCHIVE.xattr."):
            xattrs[key.removeprefix("LIBARCHIVE.xattr.")] = "base64:" + value
        elif key not in TIME_PAX_KEYS:
            pax.append(key)
    if xattrs:
        entry["xattrs"] = xattrs
    if pax:
        entry["pax"] = pax
    header = _header_format(member, tar)
    if header != "ustar":
        entry["header"] = header
    return entry


def layer_entries(tar: bytes) -> tuple[list[Json], int]:
    """The entries of an uncompressed layer tar in tar order, and its tail: 512-byte blocks after the
    last member's data (2 for a bare end-of-archive marker, more when padded to a record size)."""
    entries: list[Json] = []
    end = 0
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        for member in archive:
            entries.append(_entry(member, archive, tar))
            end = member.offset_data + ((member.size + 511) // 512 * 512 if member.isreg() else 0)
    return entries, (len(tar) - end) // 512


def _layer(layout: Path, descriptor: Json) -> Json:
    tar = _uncompress(_blob(layout, descriptor["digest"]), descriptor["digest"])
    entries, tail = layer_entries(tar)
    return {
        "mediaType": descriptor.get("mediaType"),
        "digest": descriptor["digest"],
        "size": descriptor.get("size"),
        "diff_id": "sha256:" + hashlib.sha256(tar).hexdigest(),
        "tar_size": len(tar),
        "tar_tail_blocks": tail,
        "entries": entries,
    }


def _without_created(config: Json) -> Json:
    out = {key: value for key, value in config.items() if key != "created"}
    if isinstance(out.get("history"), list):
        out["history"] = [{k: v for k, v in step.items() if k != "created"} for step in out["history"]]
    return out


def _split(path: str) -> tuple[str, str]:
    """``/a/b`` -> (``/a``, ``b``); ``/a`` -> (``/``, ``a``)."""
    head, _, base = path.rpartition("/")
    return head or "/", base


def _absolute(name: str) -> str:
    return "/" + "/".join(part for part in name.split("/") if part not in ("", "."))


class _Inode:
    """One file's metadata; hardlinked paths share one instance."""

    __slots__ = ("meta",)

    def __init__(self, meta: Json) -> None:
        self.meta = meta


def flatten_layers(layers: list[Json]) -> tuple[dict[str, Json], list[str]]:
    """Apply the layers' entries in order (whiteouts of a layer hide lower layers only, so they are
    applied before that layer's own entries); -> ({absolute path: metadata}, warnings)."""
    tree: dict[str, _Inode] = {}
    warnings: list[str] = []

    def drop(path: str, *, keep_self: bool = False) -> None:
        below = path.rstrip("/") + "/"
        for known in [p for p in tree if p.startswith(below) or (p == path and not keep_self)]:
            del tree[known]

    def make_parents(path: str) -> None:
        missing, parent = [], _split(path)[0]
        while parent != "/" and parent not in tree:
            missing.append(parent)
            parent = _split(parent)[0]
        if parent != "/" and tree[parent].meta["type"] != "dir":
            warnings.append(f"{path}: parent {parent} is a {tree[parent].meta['type']}")
        for directory in reversed(missing):
            tree[directory] = _Inode({"type": "dir", "mode": "0755", "uid": 0, "gid": 0, "implicit": True})

    for layer in layers:
        for entry in layer["entries"]:
            parent, base = _split(_absolute(entry["name"]))
            if base == OPAQUE:
                drop(parent, keep_self=True)
            elif base.startswith(WHITEOUT) and not base.startswith(WHITEOUT + WHITEOUT):
                drop(parent.rstrip("/") + "/" + base.removeprefix(WHITEOUT))
        for entry in layer["entries"]:
            path = _absolute(entry["name"])
            if _split(path)[1].startswith(WHITEOUT):
                continue
            meta = {k: v for k, v in entry.items() if k not in ("name", "pax", "uname", "gname", "header")}
            if entry["type"] == "hardlink":
                target = _absolute(entry["linkname"])
                if target in tree:
                    inode = tree[target]
                else:
                    warnings.append(f"{path}: hardlink to missing {target}")
                    inode = _Inode(dict(meta, type="dangling-hardlink"))
            else:
                link = meta.pop("linkname", None)
                if entry["type"] == "symlink":
                    meta["target"] = link
                inode = _Inode(meta)
            if path == "/":
                tree["/"] = inode
                continue
            make_parents(path)
            old = tree.get(path)
            if old is not None and not (old.meta["type"] == "dir" and inode.meta["type"] == "dir"):
                drop(path)
            tree[path] = inode

    paths_of: dict[int, list[str]] = {}
    for path, inode in tree.items():
        paths_of.setdefault(id(inode), []).append(path)
    rootfs: dict[str, Json] = {}
    for path in sorted(tree):
        meta = dict(tree[path].meta)
        links = paths_of[id(tree[path])]
        if len(links) > 1:
            meta["links"] = sorted(links)
        rootfs[path] = meta
    return rootfs, warnings


def _image(layout: Path, manifest: Json, platform: Json | None) -> tuple[str, ImageDump, list[str]]:
    config = _json_blob(layout, manifest["config"]["digest"])
    layers = [_layer(layout, descriptor) for descriptor in manifest.get("layers", [])]
    steps = [step.get("created_by", "") for step in config.get("history", []) if not step.get("empty_layer")]
    if len(steps) == len(layers):
        for layer, step in zip(layers, steps, strict=True):
            layer["created_by"] = step
    rootfs, warnings = flatten_layers(layers)
    key = platform_key(platform or {k: config.get(k) for k in ("os", "architecture", "variant")})
    return key, ImageDump(manifest, _without_created(config), layers, rootfs), warnings


def _is_attestation(descriptor: Json) -> bool:
    return descriptor.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest"


def dump_layout(layout: Path, ref: str | None = None) -> tuple[Dump, list[str]]:
    """Dump the one image (or index) an OCI layout's ``index.json`` names (by ref name if given)."""
    top = json.loads((layout / "index.json").read_text())
    descriptors = top.get("manifests", [])
    if ref is not None:
        descriptors = [d for d in descriptors if d.get("annotations", {}).get(REF_NAME) == ref]
    if len(descriptors) == 1:
        doc = _json_blob(layout, descriptors[0]["digest"])
    elif ref is None and descriptors and all("platform" in d for d in descriptors):
        doc = top
    else:
        names = [d.get("annotations", {}).get(REF_NAME) for d in top.get("manifests", [])]
        raise ValueError(f"{layout}: index.json must name exactly one image (ref {ref!r}); it names {names}")
    warnings: list[str] = []
    if doc.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in doc:
        dump = Dump(index=doc)
        for descriptor in doc.get("manifests", []):
            if _is_attestation(descriptor):
                continue
            key, image, found = _image(layout, _json_blob(layout, descriptor["digest"]), descriptor.get("platform"))
            dump.images[key] = image
            warnings += [f"{key}: {w}" for w in found]
        return dump, warnings
    key, image, warnings = _image(layout, doc, None)
    return Dump(index=None, images={key: image}), warnings


def _load_image_folder(folder: Path) -> ImageDump:
    docs = {name: json.loads((folder / f"{name}.json").read_text()) for name in ImageDump.__annotations__}
    return ImageDump(docs["manifest"], docs["config"], docs["layers"], docs["rootfs"])


def load_dump(path: Path) -> Dump:
    """An OCI layout (dumped now) or a folder of dump files (one image, or index.json + one folder per
    platform) -> Dump."""
    if (path / "oci-layout").is_file() or (path / "blobs").is_dir():
        return dump_layout(path)[0]
    if (path / "rootfs.json").is_file():
        image = _load_image_folder(path)
        key = platform_key({k: image.config.get(k) for k in ("os", "architecture", "variant")})
        return Dump(index=None, images={key: image})
    if (path / "index.json").is_file():
        index = json.loads((path / "index.json").read_text())
        dump = Dump(index=index)
        for descriptor in index.get("manifests", []):
            if not _is_attestation(descriptor):
                key = platform_key(descriptor.get("platform"))
                dump.images[key] = _load_image_folder(path / key)
        return dump
    raise ValueError(f"{path}: neither an OCI layout nor a parity dump folder (no oci-layout, rootfs.json, index.json)")

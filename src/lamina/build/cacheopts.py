"""``--cache-to`` / ``--cache-from`` values, parsed with BuildKit's (buildx's) names, defaults and rules.

``--cache-to type=registry,ref=R[,mode=min|max][,image-manifest=true|false][,oci-mediatypes=true|false]
[,compression=gzip|zstd|uncompressed][,compression-level=N][,force-compression=true|false][,ignore-error=true|false]``,
``type=local,dest=DIR[,tag=T]``, ``type=inline``; registry and local exports also take lamina's
``merge=true|false`` (default true: add to the records already there, see docs/cache.md),
``max-size=SIZE`` (bytes of layers kept: ``500MB``, ``2GiB``, ``1048576``), ``max-age=DURATION``
(records unused for longer are dropped: ``72h``, ``7d``, ``1h30m``), ``cache-mounts=true|false`` (default
true: the contents of the RUN cache mounts the build used go along, see :mod:`lamina.build.cache.mountsync`)
and ``cache-mounts-max-size=SIZE`` (default 512MiB per cache mount). ``--cache-from type=registry,ref=R``,
``type=local,src=DIR[,tag=T|digest=sha256:...]``, or the bare shorthand ``REG/REPO:TAG`` (= type=registry).
Defaults are current BuildKit's: ``mode=min``, ``image-manifest=true``, ``oci-mediatypes=true``,
``compression=gzip``, ``tag=latest`` for local layouts. Every error names the offending value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from lamina.oci import DigestError, ReferenceError, parse_digest, parse_reference

__all__ = [
    "CacheFrom", "CacheOptionError", "CacheTo", "parse_cache_from", "parse_cache_to", "parse_duration", "parse_size",
]


CACHE_MOUNTS_MAX_SIZE = 512 * 1024**2  # cache-mounts-max-size's default: 512MiB per cache mount


class CacheOptionError(ValueError):
    """A --cache-to / --cache-from value that cannot be used; the message quotes it."""


@dataclass(frozen=True, slots=True)
class CacheTo:
    """One ``--cache-to`` (buildx's cache exporter attributes): where the cache goes and what it holds."""

    type: str  # registry | local | inline
    ref: str | None = None  # type=registry
    dest: str | None = None  # type=local
    tag: str = "latest"  # type=local
    mode: str = "min"
    image_manifest: bool = True
    oci_mediatypes: bool = True
    compression: str = "gzip"
    compression_level: int | None = None
    force_compression: bool = False
    ignore_error: bool = False
    merge: bool = True  # registry / local: union with the cache already there (False: replace it)
    max_size: int | None = None  # bytes of layer blobs the merged cache may keep
    max_age: timedelta | None = None  # records unused for longer are dropped
    cache_mounts: bool = True  # registry / local: RUN --mount=type=cache contents as extra blobs (lamina's)
    cache_mounts_max_size: int = CACHE_MOUNTS_MAX_SIZE  # a cache mount larger than this is not exported

    @property
    def label(self) -> str:
        return {"registry": f"{self.ref}", "local": f"local:{self.dest}"}.get(self.type, "inline")


@dataclass(frozen=True, slots=True)
class CacheFrom:
    """One ``--cache-from`` (buildx's cache importer attributes): the registry ref or local layout to read."""

    type: str  # registry | local
    ref: str | None = None
    src: str | None = None
    tag: str = "latest"
    digest: str | None = None

    @property
    def label(self) -> str:
        return self.ref if self.type == "registry" else f"local:{self.src}"  # type: ignore[return-value]


_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _fields(text: str, flag: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CacheOptionError(f"invalid {flag} {text!r}: expected key=value pairs, got {part!r}")
        if key in fields:
            raise CacheOptionError(f"invalid {flag} {text!r}: {key} given twice")
        fields[key] = value.strip()
    return fields


def _bool(fields: dict[str, str], key: str, default: bool, text: str, flag: str) -> bool:
    value = fields.pop(key, None)
    if value is None:
        return default
    if value.lower() not in _BOOLS:
        raise CacheOptionError(f"invalid {flag} {text!r}: {key} must be true or false, got {value!r}")
    return _BOOLS[value.lower()]


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(value: str) -> int | None:
    """``500MB`` (decimal), ``2GiB`` (binary), ``1048576`` (bytes) -> bytes; None if not a size."""
    match = _SIZE.match(value.strip())
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(value: str) -> timedelta | None:
    """Go-style ``72h``, ``1h30m``, plus days and weeks (``7d``, ``2w``); None if not a positive duration."""
    text = value.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return timedelta(seconds=seconds) if seconds > 0 else None


def _retention(fields: dict[str, str], kind: str, text: str, flag: str) -> tuple[bool, int | None, timedelta | None]:
    if kind == "inline":
        for key in ("merge", "max-size", "max-age"):
            if key in fields:
                raise CacheOptionError(f"invalid {flag} {text!r}: {key} applies to type=registry and type=local only")
    merge = _bool(fields, "merge", True, text, flag)
    size_text = fields.pop("max-size", None)
    max_size = None
    if size_text is not None:
        max_size = parse_size(size_text)
        if not max_size:
            raise CacheOptionError(
                f"invalid {flag} {text!r}: max-size must be a positive size like 500MB, 2GiB or 1048576, "
                f"got {size_text!r}"
            )
    age_text = fields.pop("max-age", None)
    max_age = None
    if age_text is not None:
        max_age = parse_duration(age_text)
        if max_age is None:
            raise CacheOptionError(
                f"invalid {flag} {text!r}: max-age must be a positive duration like 72h, 7d or 1h30m, got {age_text!r}"
            )
    return merge, max_size, max_age


def _cache_mounts(fields: dict[str, str], kind: str, text: str, flag: str) -> tuple[bool, int]:
    """``cache-mounts=true|false`` and ``cache-mounts-max-size=SIZE`` (lamina's; registry and local exports)."""
    if kind == "inline":
        for key in ("cache-mounts", "cache-mounts-max-size"):
            if key in fields:
                raise CacheOptionError(f"invalid {flag} {text!r}: {key} applies to type=registry and type=local only")
    enabled = _bool(fields, "cache-mounts", True, text, flag)  # type=inline carries none (its finalize)
    size_text = fields.pop("cache-mounts-max-size", None)
    if size_text is None:
        return enabled, CACHE_MOUNTS_MAX_SIZE
    size = parse_size(size_text)
    if not size:
        raise CacheOptionError(
            f"invalid {flag} {text!r}: cache-mounts-max-size must be a positive size like 512MiB or 2GB, "
            f"got {size_text!r}"
        )
    return enabled, size


def _check_ref(ref: str | None, text: str, flag: str) -> str:
    if not ref:
        raise CacheOptionError(f"invalid {flag} {text!r}: type=registry needs ref=REGISTRY/REPOSITORY[:TAG]")
    try:
        parse_reference(ref)
    except ReferenceError as exc:
        raise CacheOptionError(f"invalid {flag} {text!r}: {exc}") from None
    return ref


def _no_leftovers(fields: dict[str, str], text: str, flag: str) -> None:
    if fields:
        raise CacheOptionError(f"invalid {flag} {text!r}: unknown option {sorted(fields)[0]!r}")


def parse_cache_to(text: str) -> CacheTo:
    flag = "--cache-to"
    if "=" not in text:
        return CacheTo("registry", ref=_check_ref(text, text, flag))  # buildx: a bare NAME is a registry ref
    fields = _fields(text, flag)
    kind = fields.pop("type", "registry")
    if kind not in ("registry", "local", "inline"):
        raise CacheOptionError(f"invalid {flag} {text!r}: type must be registry, local or inline, got {kind!r}")
    mode = fields.pop("mode", "min")
    if mode not in ("min", "max"):
        raise CacheOptionError(f"invalid {flag} {text!r}: mode must be min or max, got {mode!r}")
    if kind == "inline" and mode == "max":
        raise CacheOptionError(f"invalid {flag} {text!r}: type=inline supports mode=min only")
    compression = fields.pop("compression", "gzip")
    if compression not in ("gzip", "zstd", "uncompressed"):
        raise CacheOptionError(f"invalid {flag} {text!r}: compression must be gzip, zstd or uncompressed")
    level_text = fields.pop("compression-level", None)
    level = None
    if level_text is not None:
        if not level_text.lstrip("-").isdigit():
            raise CacheOptionError(f"invalid {flag} {text!r}: compression-level must be an integer")
        level = int(level_text)
    image_manifest = _bool(fields, "image-manifest", True, text, flag)
    oci = _bool(fields, "oci-mediatypes", True, text, flag)
    if image_manifest and not oci:
        raise CacheOptionError(f"invalid {flag} {text!r}: image-manifest=true requires oci-mediatypes=true")
    force = _bool(fields, "force-compression", False, text, flag)
    ignore = _bool(fields, "ignore-error", False, text, flag)
    merge, max_size, max_age = _retention(fields, kind, text, flag)
    mounts, mounts_max = _cache_mounts(fields, kind, text, flag)
    ref = dest = None
    tag = "latest"
    if kind == "registry":
        ref = _check_ref(fields.pop("ref", None), text, flag)
    elif kind == "local":
        dest = fields.pop("dest", None)
        if not dest:
            raise CacheOptionError(f"invalid {flag} {text!r}: type=local needs dest=DIR")
        tag = fields.pop("tag", "latest") or "latest"
    _no_leftovers(fields, text, flag)
    return CacheTo(
        kind, ref, dest, tag, mode, image_manifest, oci, compression, level, force, ignore, merge, max_size, max_age,
        cache_mounts=mounts, cache_mounts_max_size=mounts_max,
    )


def parse_cache_from(text: str) -> CacheFrom:
    flag = "--cache-from"
    if "=" not in text:
        return CacheFrom("registry", ref=_check_ref(text, text, flag))
    fields = _fields(text, flag)
    kind = fields.pop("type", "registry")
    if kind == "registry":
        ref = _check_ref(fields.pop("ref", None), text, flag)
        _no_leftovers(fields, text, flag)
        return CacheFrom("registry", ref=ref)
    if kind != "local":
        raise CacheOptionError(f"invalid {flag} {text!r}: type must be registry or local, got {kind!r}")
    src = fields.pop("src", None)
    if not src:
        raise CacheOptionError(f"invalid {flag} {text!r}: type=local needs src=DIR")
    tag = fields.pop("tag", "latest") or "latest"
    digest = fields.pop("digest", None)
    if digest is not None:
        try:
            digest = str(parse_digest(digest))
        except DigestError as exc:
            raise CacheOptionError(f"invalid {flag} {text!r}: {exc}") from None
    _no_leftovers(fields, text, flag)
    return CacheFrom("local", src=src, tag=tag, digest=digest)

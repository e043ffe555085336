"""``--cache-to`` / ``--cache-from`` values, parsed with BuildKit's (buildx's) names, defaults and rules.

``--cache-to type=registry,ref=R[,mode=min|max][,image-manifest=true|false][,oci-mediatypes=true|false]
[,compression=gzip|zstd|uncompressed][,compression-level=N][,force-compression=true|false][,ignore-error=true|false]``,
``type=local,dest=DIR[,tag=T]``, ``type=inline``. ``--cache-from type=registry,ref=R``,
``type=local,src=DIR[,tag=T|digest=sha256:...]``, or the bare shorthand ``REG/REPO:TAG`` (= type=registry).
Defaults are current BuildKit's: ``mode=min``, ``image-manifest=true``, ``oci-mediatypes=true``,
``compression=gzip``, ``tag=latest`` for local layouts. Every error names the offending value.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.oci import DigestError, ReferenceError, parse_digest, parse_reference

__all__ = ["CacheFrom", "CacheOptionError", "CacheTo", "parse_cache_from", "parse_cache_to"]


class CacheOptionError(ValueError):
    """A --cache-to / --cache-from value that cannot be used; the message quotes it."""


@dataclass(frozen=True, slots=True)
class CacheTo:
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

    @property
    def label(self) -> str:
        return {"registry": f"{self.ref}", "local": f"local:{self.dest}"}.get(self.type, "inline")


@dataclass(frozen=True, slots=True)
class CacheFrom:
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
    return CacheTo(kind, ref, dest, tag, mode, image_manifest, oci, compression, level, force, ignore)


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

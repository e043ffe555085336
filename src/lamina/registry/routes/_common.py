"""Small helpers every handler uses: services, path parameters parsed into spec errors, pagination."""

from __future__ import annotations

from aiohttp import web

from lamina.oci import Digest, DigestError, parse_digest
from lamina.store import Storage

from ..config import RegistryConfig
from ..errors import ErrorCode, RegistryError
from ..services import CONFIG, OFFLOAD, STORAGE, Offloader

__all__ = ["config", "digest_param", "next_link", "offload", "page_params", "storage"]


def offload(request: web.Request) -> Offloader:
    """Where blocking storage writes run (tracked, so shutdown waits for them)."""
    return request.app[OFFLOAD]


def storage(request: web.Request) -> Storage:
    return request.app[STORAGE]


def config(request: web.Request) -> RegistryConfig:
    return request.app[CONFIG]


def digest_param(value: str | None, what: str = "digest") -> Digest:
    """Parse a digest from the path or query; DIGEST_INVALID (UNSUPPORTED for an unknown algorithm)."""
    if not value:
        raise RegistryError(ErrorCode.DIGEST_INVALID, f"{what} is required", detail={what: value})
    try:
        return parse_digest(value)
    except DigestError as exc:
        code = ErrorCode.UNSUPPORTED if exc.unsupported else ErrorCode.DIGEST_INVALID
        status = 400 if exc.unsupported else None
        raise RegistryError(code, str(exc), detail={what: value}, status=status) from None


def page_params(request: web.Request) -> tuple[int | None, str | None]:
    """``n`` and ``last`` of the spec's pagination (end-8b, catalog)."""
    n_text = request.query.get("n")
    n: int | None = None
    if n_text is not None and n_text != "":
        if not n_text.isdigit() or len(n_text) > 9:
            raise RegistryError(
                ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a non-negative integer, got {n_text!r}"
            )
        n = int(n_text)
    return n, request.query.get("last") or None


def next_link(path: str, n: int, last: str) -> str:
    from urllib.parse import urlencode

    return f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'

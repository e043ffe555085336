"""Small helpers every handler uses: services, path parameters parsed into spec errors, pagination."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from lamina.oci import Digest, DigestError, parse_digest
from lamina.store import Storage

from ..config import RegistryConfig
from ..errors import ErrorCode, RegistryError
from ..services import CONFIG, OFFLOAD, STORAGE, Offloader

__all__ = ["config", "digest_param", "next_link", "offload", "page_params", "raw_query_param", "storage"]


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


def raw_query_param(request: web.Request, name: str) -> str | None:
    """The first ``name=`` of the query with only %-escapes decoded, so a raw ``+`` stays ``+`` (media types
    such as ``application/vnd.x+json``: Go clients send ``%2B``, others a raw ``+``; form decoding, which
    aiohttp's ``request.query`` applies, would turn it into a space)."""
    for pair in request.rel_url.raw_query_string.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            return unquote(value)
    return None


def page_params(request: web.Request, listing: str) -> tuple[int, str | None]:
    """``n`` and ``last`` of the spec's pagination (end-8b, catalog, referrers) for ``listing``
    (``catalog``, ``tags`` or ``referrers``): ``n`` defaults to the listing's page size, and above its
    maximum is refused with PAGINATION_NUMBER_INVALID, as CNCF distribution does (limits.*_page_size)."""
    default, maximum = config(request).limits.page_size(listing)
    n_text = request.query.get("n")
    if n_text is None or n_text == "":
        return default, request.query.get("last") or None
    if not n_text.isdigit() or len(n_text) > 9:
        raise RegistryError(
            ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a non-negative integer, got {n_text!r}",
            detail={"n": n_text},
        )
    n = int(n_text)
    if n > maximum:
        raise RegistryError(
            ErrorCode.PAGINATION_NUMBER_INVALID,
            f"n={n} is above the most {listing} entries a page may hold, {maximum} "
            f"(limits.{listing}_max_page_size): ask for fewer and follow the Link header",
            detail={"n": n, "max": maximum},
        )
    return n, request.query.get("last") or None


def next_link(path: str, n: int, last: str, **query: str) -> str:
    """The RFC 5988 ``Link`` to the page after ``last``; ``query``: other parameters the next page keeps."""
    from urllib.parse import urlencode

    return f'<{path}?{urlencode({**query, "n": n, "last": last})}>; rel="next"'

"""end-8a/8b: ``GET /v2/<name>/tags/list`` with ``n``/``last`` pagination and an RFC 5988 ``Link``.

Without ``n`` a page holds ``limits.tags_page_size`` tags (1000); ``n`` above ``limits.tags_max_page_size``
is PAGINATION_NUMBER_INVALID. A ``Link`` to the next page is sent whenever more tags follow."""

from __future__ import annotations

from aiohttp import web

from ..errors import ErrorCode, RegistryError
from ._common import next_link, page_params, storage

__all__ = ["list_tags"]


async def list_tags(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    n, last = page_params(request, "tags")
    metadata = storage(request).metadata
    if not metadata.repository_exists(name):
        raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {name} is not known", detail={"name": name})
    found = list(metadata.list_tags(name, last, n + 1))
    headers = {}
    if len(found) > n:
        found = found[:n]
        if found:
            headers["Link"] = next_link(f"/v2/{name}/tags/list", n, found[-1])
    return web.json_response({"name": name, "tags": found}, headers=headers)

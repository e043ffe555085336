"""``GET /v2/_catalog``: repository names, paginated like the tags list (``n``, ``last``, ``Link``)."""

from __future__ import annotations

from aiohttp import web

from ._common import next_link, page_params, storage

__all__ = ["list_repositories"]


async def list_repositories(request: web.Request) -> web.Response:
    n, last = page_params(request)
    found = list(storage(request).metadata.list_repositories(last, None if n is None else n + 1))
    headers = {}
    if n is not None and len(found) > n:
        found = found[:n]
        if found:
            headers["Link"] = next_link("/v2/_catalog", n, found[-1])
    return web.json_response({"repositories": found}, headers=headers)

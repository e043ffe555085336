"""``GET /v2/_catalog``: repository names, paginated like the tags list (``n``, ``last``, ``Link``).

With auth on, the auth middleware puts a :class:`~lamina.registry.auth.middleware.Visibility` on the
request and the names are filtered with it BEFORE paging: a page holds up to ``n`` names the caller may
pull, and the ``Link`` header's ``last`` is the last of them, so following the links never names a
repository the caller may not pull (filtering a page after the fact would leak the next name through
``last``). The walk reads the sorted names in batches, in a thread, until the page is full.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from lamina.store import Storage

from ..auth.middleware import VISIBILITY
from ._common import next_link, offload, page_params, storage

__all__ = ["list_repositories", "visible_page"]

_BATCH = 500  # names read from the metadata per query while filtering


def visible_page(
    store: Storage, last: str | None, limit: int | None, visible: Callable[[str], bool] | None
) -> list[str]:
    """Up to ``limit`` (None: all) repository names after ``last``, in order, that ``visible`` accepts."""
    if visible is None:
        return list(store.metadata.list_repositories(last, limit))
    found: list[str] = []
    cursor = last
    while limit is None or len(found) < limit:
        batch = list(store.metadata.list_repositories(cursor, _BATCH))
        found.extend(name for name in batch if visible(name))
        if len(batch) < _BATCH:
            break
        cursor = batch[-1]
    return found if limit is None else found[:limit]


async def list_repositories(request: web.Request) -> web.Response:
    n, last = page_params(request, "catalog")
    visible = request.get(VISIBILITY)
    found = await offload(request).run(visible_page, storage(request), last, None if n is None else n + 1, visible)
    headers = {}
    if n is not None and len(found) > n:
        found = found[:n]
        if found:
            headers["Link"] = next_link("/v2/_catalog", n, found[-1])
    return web.json_response({"repositories": found}, headers=headers)

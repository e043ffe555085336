"""Registry errors: one enum of distribution-spec error codes, each with its HTTP status.

The spec's error table (distribution-spec spec.md "Error Codes") plus the few codes CNCF distribution
adds (RANGE_INVALID, TAG_INVALID, PAGINATION_NUMBER_INVALID), and lamina's one extension code,
PRECONDITION_FAILED (a conditional tag update lost its race, :mod:`lamina.registry.conditional`).
Handlers raise :class:`RegistryError`; one middleware (:mod:`lamina.registry.app`) renders
``{"errors": [{"code", "message", "detail"}]}``, so statuses can never drift apart between handlers
(distribution's errcode package).
"""

from __future__ import annotations

import enum
import json
from typing import Any

from aiohttp import web

__all__ = ["ErrorCode", "RegistryError", "error_response"]


class ErrorCode(enum.Enum):
    """``(status, default message)`` per code."""

    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = (400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (400, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNKNOWN = (404, "manifest unknown to registry")
    NAME_INVALID = (400, "invalid repository name")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    SIZE_INVALID = (400, "provided length did not match content length")
    TAG_INVALID = (400, "manifest tag did not match URI")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNSUPPORTED = (415, "the operation is unsupported")
    TOOMANYREQUESTS = (429, "too many requests")
    RANGE_INVALID = (416, "invalid content range")
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")
    PRECONDITION_FAILED = (412, "the tag does not point where If-Match / If-None-Match expects")  # lamina's
    UNKNOWN = (500, "unknown error")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


class RegistryError(Exception):
    """An error the client caused (or 500 for UNKNOWN); ``status`` overrides the code's default
    where the spec gives one code two statuses (UNSUPPORTED is 405 for a method, 415 for a media type)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}


def error_response(error: RegistryError, *, head: bool = False) -> web.Response:
    """The spec's error body; HEAD responses carry the status and headers only."""
    entry: dict[str, Any] = {"code": error.code.name, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    body = json.dumps({"errors": [entry]}).encode()
    headers = dict(error.headers)
    if head:
        headers["Content-Length"] = str(len(body))
        return web.Response(status=error.status, headers=headers, content_type="application/json")
    return web.Response(status=error.status, body=body, headers=headers, content_type="application/json")

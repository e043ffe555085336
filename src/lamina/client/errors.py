"""Typed client errors, one base class so callers (the cache importer) can turn any failure into a warning.

HTTP failures are parsed from the distribution-spec error body (spec.md "Error Codes":
``{"errors": [{"code", "message", "detail"}]}``); every message names the registry, the repository and
the object, so a CLI can print ``str(exc)`` as its one line.
"""

from __future__ import annotations

import json

__all__ = [
    "DigestMismatch",
    "NoMatchingPlatform",
    "NotFound",
    "PreconditionFailed",
    "RegistryError",
    "RegistryUnreachable",
    "TransferInterrupted",
    "Unauthorized",
    "error_from_response",
]


def _where(registry: str, repository: str | None, obj: str | None) -> str:
    out = registry
    if repository:
        out += f"/{repository}"
    if obj:
        out += f" {obj}"
    return out


class RegistryError(Exception):
    """A registry operation failed; ``status`` is the HTTP status (None when no response was involved)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        registry: str = "",
        repository: str | None = None,
        obj: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.registry = registry
        self.repository = repository
        self.obj = obj
        head = _where(registry, repository, obj)
        status_text = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{head}: {status_text}{code}: {message}" if head else f"{status_text}{code}: {message}")


class NotFound(RegistryError):
    """404: the repository, blob, manifest or upload does not exist."""


class Unauthorized(RegistryError):
    """401/403: no or insufficient credentials for the scope the request needed."""


class PreconditionFailed(RegistryError):
    """412: a conditional manifest PUT (``If-Match`` / ``If-None-Match``) found the tag moved; re-read it."""


class DigestMismatch(RegistryError):
    """Bytes received (or about to be sent) do not hash to the digest they were addressed by."""

    def __init__(self, expected: str, actual: str, *, registry: str = "", repository: str | None = None,
                 obj: str | None = None, detail: str = "") -> None:
        self.expected = expected
        self.actual = actual
        message = f"content digest {actual} does not match the expected {expected}"
        if detail:
            message += f" ({detail})"
        super().__init__(None, "DIGEST_INVALID", message, registry=registry, repository=repository, obj=obj)


class RegistryUnreachable(RegistryError):
    """The registry did not answer (connection refused, reset, DNS, timeout) after all retries."""


class TransferInterrupted(RegistryUnreachable):
    """A response body broke off midway (reset, timeout, short read); whole-blob reads retry on it."""


class NoMatchingPlatform(RegistryError):
    """An image index has no manifest for the requested platform; the message lists what it has."""


def _parse_body(body: bytes) -> tuple[str | None, str | None]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list) or not doc["errors"]:
        return None, None
    first = doc["errors"][0]
    if not isinstance(first, dict):
        return None, None
    code = first.get("code") if isinstance(first.get("code"), str) else None
    message = first.get("message") if isinstance(first.get("message"), str) else None
    detail = first.get("detail")
    if message and detail not in (None, "", {}, []):
        message += f" ({json.dumps(detail, separators=(',', ':'))[:200]})"
    return code, message


_DEFAULT_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND", 405: "UNSUPPORTED", 412: "PRECONDITION_FAILED",
                  429: "TOOMANYREQUESTS"}


def error_from_response(
    status: int, body: bytes, *, registry: str, repository: str | None, obj: str | None
) -> RegistryError:
    """Build the typed error for a failed response; a non-spec body still yields a readable line."""
    code, message = _parse_body(body)
    if code is None:
        code = _DEFAULT_CODES.get(status, "UNKNOWN" if status < 500 else "SERVER_ERROR")
    if message is None:
        text = body[:200].decode("utf-8", "replace").strip()
        message = text or "no error body"
    cls: type[RegistryError] = RegistryError
    if status == 404:
        cls = NotFound
    elif status in (401, 403):
        cls = Unauthorized
    elif status == 412:
        cls = PreconditionFailed
    return cls(status, code, message, registry=registry, repository=repository, obj=obj)

"""Conditional tag updates, a lamina extension: ``If-Match`` / ``If-None-Match`` on a manifest PUT by tag.

A tag's entity tag is the digest of the manifest it points at: manifest GET and HEAD answer
``ETag: "<digest>"`` beside ``Docker-Content-Digest``. A writer that read a tag sends the digest back::

    PUT /v2/<name>/manifests/<tag>
    If-Match: "sha256:..."        # move the tag only if it still points here (a bare digest works too)
    If-None-Match: *              # create the tag only if it does not exist yet

and gets ``412 PRECONDITION_FAILED`` (the current digest in ``detail``) when another writer moved it in
between: the check runs in the store's transaction that moves the tag (:class:`lamina.store.TagCondition`),
so of N writers conditioned on one digest exactly one wins. ``If-Match: *`` (the tag must exist) and
lists (``"a", "b"``) follow RFC 9110 13.1.1-2. A tag already at the pushed digest answers 201 whatever the
condition (the change already happened, RFC 9110 13.1.1), so a retried PUT whose answer was lost succeeds.

A 201 to a conditional PUT carries ``Lamina-Tag-Condition: checked``, so a writer knows the condition was
evaluated (registries without this extension ignore the headers and write unconditionally; a writer that
does not see the header has to re-read the tag to find out whether it lost an update).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from multidict import CIMultiDictProxy

from lamina.oci import Digest, DigestError, parse_digest
from lamina.store import TagCondition

from .errors import ErrorCode, RegistryError

__all__ = [
    "CONDITIONAL_HEADERS",
    "CONDITION_CHECKED_HEADER",
    "parse_tag_condition",
    "precondition_failed",
    "refuse_conditions",
]

CONDITIONAL_HEADERS = ("If-Match", "If-None-Match")
CONDITION_CHECKED_HEADER = "Lamina-Tag-Condition"  # on the 201 of a PUT whose condition was evaluated


def _entity_tags(header: str, values: Iterable[str]) -> frozenset[Digest] | Literal["*"] | None:
    """The digests one conditional header lists (``"*"`` alone means any); None when absent."""
    items = [item.strip() for value in values for item in value.split(",") if item.strip()]
    if not items:
        return None
    if "*" in items:
        if len(items) > 1:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"{header}: '*' cannot be combined with digests",
                                detail={"header": header, "value": ", ".join(items)})
        return "*"
    digests = set()
    for item in items:
        if item.startswith("W/"):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"{header}: weak entity tag {item} never matches a manifest; send the digest, {header}: \"sha256:...\"",
                detail={"header": header, "value": item},
            )
        text = item[1:-1] if len(item) >= 2 and item[0] == item[-1] == '"' else item
        try:
            digests.add(parse_digest(text))
        except DigestError as exc:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"{header}: {exc}; send the ETag of a manifest GET/HEAD, e.g. {header}: \"sha256:...\"",
                detail={"header": header, "value": item},
            ) from None
    return frozenset(digests)


def parse_tag_condition(headers: CIMultiDictProxy[str]) -> TagCondition | None:
    """``If-Match`` / ``If-None-Match`` of a request as a TagCondition (None: neither header)."""
    match = _entity_tags("If-Match", headers.getall("If-Match", ()))
    none_match = _entity_tags("If-None-Match", headers.getall("If-None-Match", ()))
    if match is None and none_match is None:
        return None
    return TagCondition(match=match, none_match=none_match)


def refuse_conditions(headers: CIMultiDictProxy[str], what: str) -> None:
    """Conditional headers where lamina does not evaluate them: 400 instead of silently ignoring them."""
    for header in CONDITIONAL_HEADERS:
        if headers.getall(header, ()):
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f"{header} is honoured only on a manifest PUT by tag (a lamina extension), not on {what}; "
                f"drop the header",
                detail={"header": header},
                status=400,
            )


def precondition_failed(name: str, tag: str, current: Digest | None, condition: TagCondition) -> RegistryError:
    """412 naming where the tag is now, so the writer re-reads it and merges again."""
    where = f"points at {current}" if current is not None else "does not exist"
    if not TagCondition(match=condition.match).holds(current):
        wanted = "to exist" if condition.match == "*" else "at " + " or ".join(sorted(map(str, condition.match or ())))
        expected = f"If-Match expected it {wanted}"
    elif condition.none_match == "*":
        expected = "If-None-Match: * expected no such tag"
    else:
        expected = "If-None-Match expected it anywhere but " + " or ".join(sorted(map(str, condition.none_match or ())))
    return RegistryError(
        ErrorCode.PRECONDITION_FAILED,
        f"tag {tag!r} in {name} {where} ({expected}); GET the manifest again, merge and retry with its ETag",
        detail={"name": name, "tag": tag, "current": str(current) if current is not None else None},
    )

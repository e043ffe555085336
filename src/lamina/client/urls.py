"""URLs as the registry client handles them: absolute ``http``/``https`` URLs of RFC 3986, kept encoded.

The client builds request URLs from a registry's base URL and a path it formats itself, resolves the
``Location`` and ``Link`` headers a registry sends against the URL that was asked (RFC 3986 section 5.2,
byte for byte: an upload session's query is the registry's, never re-encoded) and appends query
parameters (``digest=``, ``mount=``/``from=``, ``n=``, token ``scope=``). :mod:`urllib.parse` does the
parsing and resolution; this class only keeps the text and answers what the client asks of it (it
replaced yarl on this path: yarl, multidict and idna cost a fresh process ~10 ms of imports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import SplitResult, quote, urljoin, urlsplit

__all__ = ["URL"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # RFC 3986 reserved characters and "%" stay; anything else is escaped
_QUERY_SAFE = "/:@!$'()*,;"  # within one query name or value ("&", "=", "+", "?" and "#" are escaped)


class URL:
    """One URL; ``encoded=True`` takes ``text`` as already percent-encoded (a header's value)."""

    __slots__ = ("_host", "_parts", "_port", "_text")

    def __init__(self, text: str, *, encoded: bool = False) -> None:
        self._text = text if encoded else quote(text, safe=_SAFE)
        self._parts: SplitResult = urlsplit(self._text)
        self._host = self._parts.hostname  # parsed once: SplitResult parses the netloc on every access
        try:
            self._port: int | ValueError | None = self._parts.port
        except ValueError:
            self._port = ValueError(f"invalid port in URL {self._text!r}")

    @property
    def scheme(self) -> str:
        return self._parts.scheme

    @property
    def raw_host(self) -> str | None:
        """The host, lower case, without the brackets of an IPv6 literal."""
        return self._host

    @property
    def host(self) -> str | None:
        return self._host

    @property
    def explicit_port(self) -> int | None:
        """The port written in the URL, if any."""
        if isinstance(self._port, ValueError):
            raise self._port
        return self._port

    @property
    def port(self) -> int | None:
        """The port written in the URL, else the scheme's default (80, 443)."""
        return self.explicit_port or _DEFAULT_PORTS.get(self.scheme)

    @property
    def path(self) -> str:
        return self._parts.path

    @property
    def query_string(self) -> str:
        return self._parts.query

    @property
    def raw_path_qs(self) -> str:
        """The request target of an origin-form request: path and query, as encoded."""
        path = self._parts.path or "/"
        return f"{path}?{self._parts.query}" if self._parts.query else path

    def is_absolute(self) -> bool:
        return bool(self._parts.scheme and self._parts.netloc)

    def join(self, other: URL) -> URL:
        """``other`` resolved against this URL (RFC 3986 section 5.2)."""
        return URL(urljoin(self._text, other._text), encoded=True)

    def extend_query(self, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> URL:
        """This URL with ``params`` appended to its query (existing parameters kept, in order)."""
        pairs = params.items() if isinstance(params, Mapping) else params
        added = "&".join(f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}" for k, v in pairs)
        if not added:
            return self
        query = f"{self._parts.query}&{added}" if self._parts.query else added
        return URL(self._parts._replace(query=query, fragment="").geturl(), encoded=True)

    def human_repr(self) -> str:
        return self._text

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"URL({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URL) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

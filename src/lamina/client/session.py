"""The HTTP transport under every registry call: scheme choice, auth, retries, redirects, transfer counters.

One :class:`Transport` per registry host, over lamina's own HTTP/1.1 client (:mod:`lamina.client.http11`:
asyncio streams, keep-alive, 16 requests in flight per origin; no aiohttp import and no TLS context for a
plain-HTTP registry, which is most of a fresh process's start-up on a fully cached build). aiohttp
(:mod:`lamina.client.aiohttp_backend`) carries the requests to origins behind a proxy from the
environment, and every request of a client given an aiohttp session. ``https`` always, except for
loopback hosts (unless they have a docker ``certs.d`` directory) and
registries the caller (or ``LAMINA_INSECURE_REGISTRIES=host:port,...``) marks insecure; the certificates
an https registry is checked with, and those presented to it, come from :mod:`lamina.client.tls`.
Requests that are safe to repeat are retried with exponential backoff and full jitter on connection
errors (but TLS failures), 429 and 5xx other than 501 (distribution-spec: 501 means "not supported",
which retrying cannot change). A 401 is answered with the credentials the challenge asks for, as
``auth.py`` decides from what the request sent: at most :data:`AUTH_RETRIES` times per request, one of
them after dropping a refused token. Redirects (blob GETs to object storage) are followed by hand so the
registry's Authorization header never leaks to another origin.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .auth import Authenticator, Verdict
from .credentials import CredentialError, Credentials, CredentialStore
from .errors import RegistryError, RegistryUnreachable, TransferInterrupted, Unauthorized, error_from_response
from .http11 import Answer, BodyError, ConnectError, HTTPClient, HTTPError, RequestBody, TLSError
from .tls import has_certs_dir, ssl_for
from .urls import URL

if TYPE_CHECKING:
    import aiohttp

    from .aiohttp_backend import AiohttpBackend

__all__ = [
    "INSECURE_ENV",
    "Body",
    "RetryPolicy",
    "TransferKind",
    "TransferStats",
    "Transport",
    "api_host",
    "insecure_registries_from_env",
    "is_loopback",
]

INSECURE_ENV = "LAMINA_INSECURE_REGISTRIES"
TransferKind = Literal["manifest", "config", "layer", "other"]
Body = bytes | Callable[[], AsyncIterable[bytes]] | None
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
AUTH_RETRIES = 3  # sent nothing -> current token -> (refused) a fresh token; one more for a token that changed


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1, with or without a port."""
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_registries_from_env() -> frozenset[str]:
    raw = os.environ.get(INSECURE_ENV, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _tls_reason(exc: TLSError, target: URL) -> str:
    """The TLS failure in one line, with what to do about it."""
    certificate, reason = exc.certificate, exc.reason
    authority = target.host if target.explicit_port is None else f"{target.host}:{target.port}"
    if certificate:
        return (f"the registry's TLS certificate does not verify ({reason}); if a private CA signed it, put the "
                f"CA certificate in /etc/docker/certs.d/{authority}/ca.crt ($LAMINA_CERTS_D replaces "
                "/etc/docker/certs.d) or in SSL_CERT_FILE")
    return (f"TLS handshake failed ({reason}); if the registry serves plain HTTP, list it in "
            f"LAMINA_INSECURE_REGISTRIES={authority}")


def api_host(registry: str) -> str:
    """Docker Hub's API lives on registry-1.docker.io; every other registry answers on its own name."""
    return "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: attempts, exponential backoff bounds, the longest Retry-After obeyed."""

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))


@dataclass
class TransferStats:
    """Bytes moved through one client, by kind, so the builder can prove "no layer bytes downloaded"."""

    downloaded: dict[str, int] = field(default_factory=lambda: {"manifest": 0, "config": 0, "layer": 0, "other": 0})
    uploaded: dict[str, int] = field(default_factory=lambda: {"manifest": 0, "config": 0, "layer": 0, "other": 0})
    requests: int = 0
    retries: int = 0

    def add_down(self, kind: TransferKind, n: int) -> None:
        self.downloaded[kind] += n

    def add_up(self, kind: TransferKind, n: int) -> None:
        self.uploaded[kind] += n

    def add(self, other: TransferStats) -> None:
        """Fold ``other`` into this one (a pool's total over its clients)."""
        for kind, n in other.downloaded.items():
            self.downloaded[kind] += n
        for kind, n in other.uploaded.items():
            self.uploaded[kind] += n
        self.requests += other.requests
        self.retries += other.retries


def _origin(url: URL) -> tuple[str | None, str | None, int | None]:
    return url.scheme, url.host, url.port


class Transport:
    """HTTP to one registry host; owns its HTTP client (or borrows an aiohttp session) and the auth state."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        credentials: CredentialStore | Credentials | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        connections_per_host: int = 16,
        connect_timeout: float = 30.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.registry = registry
        if insecure is None:  # auto: loopback (without certs.d) or listed in the environment; True/False force it
            insecure = is_loopback(registry) and not has_certs_dir(registry)
            insecure = insecure or registry in insecure_registries_from_env()
        scheme = "http" if insecure else "https"
        self.base_url = URL(f"{scheme}://{api_host(registry)}")
        self.retry = retry or RetryPolicy()
        self.stats = TransferStats()
        self._limit = connections_per_host
        self._timeouts = (connect_timeout, read_timeout)
        self._http: HTTPClient | None = None
        self._aiohttp: AiohttpBackend | None = None
        self._borrowed = session  # every request through the caller's aiohttp session (left open)
        self._trust_env = not is_loopback(registry)  # HTTP(S)_PROXY/NO_PROXY as docker, except for loopback
        self._proxied: dict[tuple[str | None, str | None, int | None], bool] = {}
        self._creds_source = credentials
        self._creds_task: asyncio.Task[Credentials | None] | None = None
        self.auth = Authenticator(registry, self.send, self._credentials)

    async def _credentials(self) -> Credentials | None:
        """The credentials for this registry, looked up once (a helper runs once however many requests
        ask at the same time); a failure is one line and is given to every caller."""
        if self._creds_task is None:
            self._creds_task = asyncio.ensure_future(self._lookup_credentials())
        return await asyncio.shield(self._creds_task)

    async def _lookup_credentials(self) -> Credentials | None:
        try:
            source = self._creds_source
            if source is None:
                source = self._creds_source = CredentialStore()
            if isinstance(source, Credentials):
                return source
            return await source.get(self.registry)
        except CredentialError as exc:  # callers that turn RegistryError into a warning get this one too
            raise Unauthorized(None, "CREDENTIALS", " ".join(str(exc).split()), registry=self.registry) from None

    def _via_aiohttp(self, url: URL) -> bool:
        if self._borrowed is not None:
            return True
        if not self._trust_env:
            return False
        origin = _origin(url)
        known = self._proxied.get(origin)
        if known is None:
            from .aiohttp_backend import proxied

            known = self._proxied[origin] = proxied(url)
        return known

    async def send(self, method: str, url: URL, headers: Mapping[str, str] | None = None,
                   body: RequestBody = None) -> Answer:
        """One HTTP exchange, no retry, auth or redirect (those are :meth:`request`'s): the answer once its
        head has arrived, to be released by the caller. Raises :class:`~lamina.client.http11.HTTPError`."""
        if self._via_aiohttp(url):
            if self._aiohttp is None:
                from .aiohttp_backend import AiohttpBackend

                self._aiohttp = AiohttpBackend(self._borrowed, limit_per_host=self._limit,
                                               connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1])
            return await self._aiohttp.request(method, url, headers=headers, body=body, ssl_context=ssl_for(url))
        if self._http is None:
            from lamina import __version__

            self._http = HTTPClient(limit_per_host=self._limit, connect_timeout=self._timeouts[0],
                                    read_timeout=self._timeouts[1], user_agent=f"lamina/{__version__}")
        return await self._http.request(method, url, headers=headers, body=body, ssl_context=ssl_for(url))

    async def close(self) -> None:
        await self.auth.close()
        if self._creds_task is not None and not self._creds_task.done():
            self._creds_task.cancel()
            await asyncio.gather(self._creds_task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._aiohttp is not None:
            await self._aiohttp.close()

    def url(self, path: str) -> URL:
        return self.base_url.join(URL(path))

    def resolve(self, location: str, base: URL) -> URL:
        """A Location header, absolute or relative, kept byte for byte (its query included)."""
        target = URL(location, encoded=True)
        return target if target.is_absolute() else base.join(target)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: URL | str,
        *,
        scopes: Sequence[str],
        repository: str | None = None,
        obj: str | None = None,
        ok: Iterable[int] = (200,),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body = None,
        retry: bool = True,
        follow_redirects: bool = False,
    ) -> AsyncIterator[Answer]:
        """Send one logical request and yield the response whose status is in ``ok``; raise typed errors.

        ``body`` is bytes or a factory of fresh async iterables, so a retry can resend it.
        """
        ok_set = frozenset(ok)
        target = self.url(url) if isinstance(url, str) else url
        if params:
            target = target.extend_query(params)
        attempt, redirects, auth_retries, renewed = 0, 0, 0, False
        while True:
            attempt += 1
            send_auth = _origin(target) == _origin(self.base_url)
            hdrs = dict(headers or {})
            sent: str | None = None
            if send_auth:
                sent = await self.auth.header(scopes)
                if sent:
                    hdrs["Authorization"] = sent
            data = body() if callable(body) else body
            self.stats.requests += 1
            try:
                resp = await self.send(method, target, hdrs, data)
            except TLSError as exc:  # a certificate will not verify better on a retry
                raise RegistryUnreachable(
                    None, "TLS_ERROR", f"{method} {target.human_repr()}: {_tls_reason(exc, target)}",
                    registry=self.registry, repository=repository, obj=obj,
                ) from None
            except ConnectError as exc:
                if retry and attempt < self.retry.attempts:
                    self.stats.retries += 1
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                reason = str(exc) or type(exc).__name__
                raise RegistryUnreachable(
                    None, "UNREACHABLE", f"{method} {target.human_repr()} failed after {attempt} attempt(s): {reason}",
                    registry=self.registry, repository=repository, obj=obj,
                ) from None
            except (HTTPError, ValueError) as exc:  # malformed answers, bad URLs: not worth a retry
                raise RegistryError(
                    None, "PROTOCOL_ERROR", f"{method} {target.human_repr()}: {exc or type(exc).__name__}",
                    registry=self.registry, repository=repository, obj=obj,
                ) from None
            status = resp.status
            if status == 401 and send_auth:
                challenge = resp.headers.get("WWW-Authenticate")
                payload = await self._drain(resp)
                verdict = Verdict.GIVE_UP
                if auth_retries < AUTH_RETRIES:
                    verdict = await self.auth.on_unauthorized(challenge, scopes, sent)
                if verdict is Verdict.RETRY or (verdict is Verdict.RENEWED and not renewed):
                    renewed = renewed or verdict is Verdict.RENEWED
                    auth_retries += 1
                    attempt -= 1  # the handshake is not a failure
                    continue
                raise await self._unauthorized(payload, scopes, repository, obj)
            if retry and attempt < self.retry.attempts and (status == 429 or (status >= 500 and status != 501)):
                delay = self._retry_after(resp.headers.get("Retry-After"))
                await self._drain(resp)
                self.stats.retries += 1
                await asyncio.sleep(delay if delay is not None else self.retry.delay(attempt))
                continue
            if follow_redirects and status in _REDIRECTS and status not in ok_set:
                location = resp.headers.get("Location")
                await self._drain(resp)
                redirects += 1
                if not location or redirects > _MAX_REDIRECTS:
                    raise RegistryError(status, "REDIRECT", "too many redirects or a redirect without Location",
                                        registry=self.registry, repository=repository, obj=obj)
                target = self.resolve(location, target)
                attempt -= 1
                continue
            if status not in ok_set:
                payload = await self._drain(resp) if method != "HEAD" else b""
                resp.release()
                raise error_from_response(status, payload, registry=self.registry, repository=repository, obj=obj)
            try:
                yield resp
            except BodyError as exc:  # the caller was reading the body when the connection broke
                raise TransferInterrupted(
                    None, "UNREACHABLE", f"{method} {target.human_repr()}: {exc}", registry=self.registry,
                    repository=repository, obj=obj,
                ) from None
            finally:
                resp.release()
            return

    async def _unauthorized(self, payload: bytes, scopes: Sequence[str], repository: str | None,
                            obj: str | None) -> RegistryError:
        """The final 401 as one line: the registry's words, then which scope and whose credentials."""
        error = error_from_response(401, payload, registry=self.registry, repository=repository, obj=obj)
        why = await self.auth.explain(scopes)
        return Unauthorized(401, error.code, f"{error.message}; {why}", registry=self.registry,
                            repository=repository, obj=obj)

    def _retry_after(self, value: str | None) -> float | None:
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            return None
        return min(max(seconds, 0.0), self.retry.max_retry_after)

    @staticmethod
    async def _drain(resp: Answer) -> bytes:
        """Read and release a response we will not hand out, so its connection returns to the pool."""
        try:
            return await resp.read()
        except HTTPError:
            return b""
        finally:
            resp.release()

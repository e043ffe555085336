"""``RegistryClient``: one registry host, every distribution-spec operation, shared auth and counters.

A client per host (not per repository) so Bearer tokens, the connection pool and the transfer counters
are shared by every repository the builder touches on that registry; :class:`ClientPool` hands out one
client per host for callers that talk to several registries (base images, cache refs, push targets).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from .blobs import BlobOps
from .credentials import Credentials, CredentialStore
from .manifests import ManifestOps
from .session import RetryPolicy, TransferStats, Transport

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ClientPool", "RegistryClient"]


class RegistryClient(BlobOps, ManifestOps):
    """Async client for one registry host (``host[:port]``, ``docker.io`` for Docker Hub).

    ``insecure``: None = plain HTTP only for loopback hosts and ``$LAMINA_INSECURE_REGISTRIES``; True/False
    force HTTP/HTTPS. ``credentials``: a :class:`CredentialStore` (default: docker's config.json, read
    lazily) or fixed :class:`Credentials` (``Credentials()`` = anonymous). ``session``: send every request
    through this aiohttp session (the caller closes it) instead of lamina's own HTTP/1.1 client. Blobs up
    to ``monolithic_limit`` bytes go in one PUT, larger ones in
    ``chunk_size`` PATCHes. Use as ``async with``, or call :meth:`close`.
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        credentials: CredentialStore | Credentials | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        connections_per_host: int = 16,
        monolithic_limit: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self._present = set()
        self.transport = Transport(
            registry, insecure=insecure, credentials=credentials, retry=retry, session=session,
            connections_per_host=connections_per_host,
        )
        if monolithic_limit is not None:
            self.monolithic_limit = monolithic_limit
        if chunk_size is not None:
            if chunk_size <= 0:
                raise ValueError(f"chunk_size must be positive, got {chunk_size}")
            self.chunk_size = chunk_size

    @property
    def registry(self) -> str:
        return self.transport.registry

    @property
    def stats(self) -> TransferStats:
        return self.transport.stats

    async def ping(self) -> None:
        """GET /v2/ (spec "Determining support"), authenticating if challenged; raises if unusable."""
        async with self.transport.request("GET", "/v2/", scopes=[], obj="API version check"):
            pass

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class ClientPool:
    """One :class:`RegistryClient` per registry host, created on first use, closed together."""

    def __init__(self, *, insecure: frozenset[str] = frozenset(), credentials: CredentialStore | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self._insecure = insecure
        self._credentials = credentials
        self._retry = retry
        self._clients: dict[str, RegistryClient] = {}

    def get(self, registry: str) -> RegistryClient:
        client = self._clients.get(registry)
        if client is None:
            insecure = True if registry in self._insecure else None
            client = RegistryClient(registry, insecure=insecure, credentials=self._credentials, retry=self._retry)
            self._clients[registry] = client
        return client

    def declare(self, registry: str, scopes: Iterable[str]) -> None:
        """Scopes a caller will need on ``registry``: its first token covers them all (fewer token requests)."""
        self.get(registry).transport.auth.declare(list(scopes))

    def clients(self) -> dict[str, RegistryClient]:
        return dict(self._clients)

    def stats(self) -> TransferStats:
        """Bytes and requests summed over every client of the pool."""
        total = TransferStats()
        for client in self._clients.values():
            total.add(client.stats)
        return total

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

"""Blob operations (distribution-spec "Pulling blobs", "Pushing blobs", "Mounting a blob from another repository").

Every byte that comes in is hashed on the way and checked against the digest it was asked for (and the
size when known) before anyone may use it; ``download_blob`` writes a temp file beside the target and
renames it only after the check, so a mismatch or a crash never leaves a half file under the real name.
``push_blob`` asks HEAD first, then tries the cross-repository mounts the caller offers, and only then
uploads: one monolithic PUT for small blobs, Content-Range PATCH chunks streamed from the file for
large ones (ECR-style strictness), always following ``Location`` exactly as the registry sent it.

A client remembers which blobs it has seen in which repository (a HEAD or GET answered 200, a push or a
mount that succeeded): :meth:`BlobOps.has_blob` and ``push_blob`` ask the registry only about the others,
so a fully cached build checks each layer once, not once for the cache and again for the push. A blob
deleted from the registry during the build is then noticed by the manifest PUT (``MANIFEST_BLOB_UNKNOWN``)
instead of the HEAD, as it would be if it went between the HEAD and the PUT.
"""

from __future__ import annotations

import enum
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from ..oci import Digest, parse_digest
from .auth import pull_scope, push_scope
from .errors import DigestMismatch, RegistryError, RegistryUnreachable, TransferInterrupted
from .http11 import Answer, BodyError
from .session import Body, TransferKind, Transport
from .urls import URL

__all__ = ["BlobOps", "PushOutcome"]

_READ_CHUNK = 1 << 20
Progress = Callable[[int], None]
_OCTET = "application/octet-stream"


class PushOutcome(enum.StrEnum):
    EXISTS = "exists"  # HEAD found it: nothing sent
    MOUNTED = "mounted"  # cross-repository mount: nothing sent
    UPLOADED = "uploaded"


def _retriable(exc: RegistryError) -> bool:
    if isinstance(exc, RegistryUnreachable):
        return True
    return exc.status is not None and (exc.status == 429 or (exc.status >= 500 and exc.status != 501))


class _SourceHash:
    """Hashes what an upload actually read, so a file that changed under us is caught by name."""

    def __init__(self, digest: Digest) -> None:
        self.hasher = digest.hasher()
        self.count = 0

    def update(self, data: bytes) -> None:
        self.hasher.update(data)
        self.count += len(data)


class BlobOps:
    """Mixin for :class:`lamina.client.RegistryClient`; needs ``self.transport``."""

    transport: Transport
    monolithic_limit: int = 16 << 20
    chunk_size: int = 32 << 20
    _present: set[tuple[str, str]]  # (repository, digest) seen there by this client

    def _seen(self, repo: str, digest: Digest) -> None:
        self._present.add((repo, str(digest)))

    async def has_blob(self, repo: str, digest: Digest | str) -> bool:
        """True if ``repo`` holds the blob: known from this client's earlier answers, else asked with HEAD."""
        digest = parse_digest(str(digest))
        return (repo, str(digest)) in self._present or await self.head_blob(repo, digest) is not None

    def _blob_path(self, repo: str, digest: Digest) -> str:
        return f"/v2/{repo}/blobs/{digest}"

    async def head_blob(self, repo: str, digest: Digest | str) -> int | None:
        """The blob's size if ``repo`` has it (-1 if the registry omits Content-Length), else None."""
        digest = parse_digest(str(digest))
        async with self.transport.request(
            "HEAD", self._blob_path(repo, digest), scopes=[pull_scope(repo)], repository=repo,
            obj=f"blob {digest}", ok=(200, 404), follow_redirects=True,
        ) as resp:
            if resp.status == 404:
                self._present.discard((repo, str(digest)))
                return None
            length = resp.headers.get("Content-Length")
        self._seen(repo, digest)
        return int(length) if length and length.isdigit() else -1

    async def get_blob(
        self, repo: str, digest: Digest | str, *, size: int | None = None, kind: TransferKind = "layer",
        progress: Progress | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream the blob's bytes; raises :class:`DigestMismatch` at the end (or early on excess size).

        The consumer must discard what it received when the iterator raises. ``progress`` is called with
        each chunk's length as bytes arrive (a retried transfer counts again).
        """
        digest = parse_digest(str(digest))
        obj = f"blob {digest}"
        hasher, count = digest.hasher(), 0
        async with self.transport.request(
            "GET", self._blob_path(repo, digest), scopes=[pull_scope(repo)], repository=repo, obj=obj,
            follow_redirects=True,
        ) as resp:
            async for chunk in self._chunks(resp, repo, obj):
                count += len(chunk)
                self.transport.stats.add_down(kind, len(chunk))
                if progress is not None:
                    progress(len(chunk))
                if size is not None and count > size:
                    raise DigestMismatch(str(digest), "(unknown)", registry=self.transport.registry,
                                         repository=repo, obj=obj, detail=f"more than the expected {size} bytes")
                hasher.update(chunk)
                yield chunk
        actual = f"{digest.algorithm}:{hasher.hexdigest()}"
        if actual != str(digest) or (size is not None and count != size):
            raise DigestMismatch(str(digest), actual, registry=self.transport.registry, repository=repo, obj=obj,
                                 detail=f"{count} bytes" + (f", expected {size}" if size is not None else ""))
        self._seen(repo, digest)

    async def _chunks(self, resp: Answer, repo: str, obj: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.iter_chunked(_READ_CHUNK):
                yield chunk
        except BodyError as exc:
            raise TransferInterrupted(None, "UNREACHABLE", f"download broke off: {exc or type(exc).__name__}",
                                      registry=self.transport.registry, repository=repo, obj=obj) from None

    async def fetch_blob(
        self, repo: str, digest: Digest | str, *, size: int | None = None, kind: TransferKind = "config",
        max_size: int = 256 << 20,
    ) -> bytes:
        """A small blob (a config, a cacheconfig) in memory, verified; retried if the body breaks off."""
        for attempt in range(1, self.transport.retry.attempts + 1):
            parts: list[bytes] = []
            total = 0
            try:
                async for chunk in self.get_blob(repo, digest, size=size, kind=kind):
                    total += len(chunk)
                    if total > max_size:
                        raise RegistryError(None, "BLOB_TOO_LARGE", f"larger than {max_size} bytes; use download_blob",
                                            registry=self.transport.registry, repository=repo, obj=f"blob {digest}")
                    parts.append(chunk)
                return b"".join(parts)
            except TransferInterrupted:
                if attempt == self.transport.retry.attempts:
                    raise
        raise AssertionError("unreachable")

    async def download_blob(
        self, repo: str, digest: Digest | str, dest: str | os.PathLike[str], *, size: int | None = None,
        kind: TransferKind = "layer", progress: Progress | None = None,
    ) -> int:
        """Write the blob to ``dest`` atomically (temp + fsync + rename) after verifying it; returns its size."""
        dest = Path(dest)
        for attempt in range(1, self.transport.retry.attempts + 1):
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            try:
                total = 0
                with os.fdopen(fd, "wb") as out:
                    async for chunk in self.get_blob(repo, digest, size=size, kind=kind, progress=progress):
                        out.write(chunk)
                        total += len(chunk)
                    out.flush()
                    os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would surprise a content store
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
                return total
            except TransferInterrupted:
                os.unlink(tmp)
                if attempt == self.transport.retry.attempts:
                    raise
            except BaseException:
                os.unlink(tmp)
                raise
        raise AssertionError("unreachable")

    async def push_blob(
        self, repo: str, digest: Digest | str, size: int, source: bytes | str | os.PathLike[str], *,
        mount_from: Sequence[str] = (), kind: TransferKind = "layer", progress: Progress | None = None,
    ) -> PushOutcome:
        """Make ``repo`` hold the blob: HEAD, else mount from one of ``mount_from``, else upload ``source``.

        ``progress`` is called with each chunk's length as bytes are sent (a restarted upload counts again).
        """
        digest = parse_digest(str(digest))
        obj = f"blob {digest}"
        if isinstance(source, bytes):
            if len(source) != size or not digest.verify(source):
                raise DigestMismatch(str(digest), _digest_str(digest, source),
                                     registry=self.transport.registry, repository=repo, obj=obj,
                                     detail=f"the {len(source)} bytes given to push")
        else:
            actual_size = os.stat(source).st_size
            if actual_size != size:
                raise RegistryError(None, "SIZE_INVALID", f"file {os.fspath(source)} has {actual_size} bytes, "
                                    f"the descriptor says {size}", registry=self.transport.registry,
                                    repository=repo, obj=obj)
        if await self.has_blob(repo, digest):
            return PushOutcome.EXISTS
        location: URL | None = None
        candidates = [r for r in dict.fromkeys(mount_from) if r != repo]
        for i, source_repo in enumerate(candidates):
            location = None
            try:
                location = await self._mount_request(repo, digest, source_repo, obj)
            except RegistryUnreachable:
                raise
            except RegistryError:
                continue  # source gone, not ours to read, or mounts unsupported: try the next, then upload
            if location is None:
                self._seen(repo, digest)
                return PushOutcome.MOUNTED
            if i < len(candidates) - 1:
                await self._cancel(location, repo)
                location = None
        last: RegistryError | None = None
        for _ in range(self.transport.retry.attempts):
            try:
                await self._upload(repo, digest, size, source, kind, location, progress)
                self._seen(repo, digest)
                return PushOutcome.UPLOADED
            except RegistryError as exc:
                if not _retriable(exc):
                    raise
                last, location = exc, None  # restart cleanly with a fresh session
        assert last is not None
        raise last

    async def mount_blob(self, repo: str, digest: Digest | str, mount_from: Sequence[str]) -> bool:
        """Cross-repository mount only, never an upload: True once ``repo`` holds the blob by a mount.

        For callers whose bytes are not local yet (a lazy cache hit): mount first, download only if no
        repository of this registry can lend the blob. An upload session a registry opens instead is cancelled.
        """
        digest = parse_digest(str(digest))
        obj = f"blob {digest}"
        for source_repo in [r for r in dict.fromkeys(mount_from) if r != repo]:
            try:
                location = await self._mount_request(repo, digest, source_repo, obj)
            except RegistryUnreachable:
                raise
            except RegistryError:
                continue
            if location is None:
                self._seen(repo, digest)
                return True
            await self._cancel(location, repo)
        return False

    async def _mount_request(self, repo: str, digest: Digest, source_repo: str, obj: str) -> URL | None:
        """POST a cross-repository mount from ``source_repo``: None once mounted (201), else the upload
        session the registry opened instead (202); a refused mount raises :class:`RegistryError`."""
        async with self.transport.request(
            "POST", f"/v2/{repo}/blobs/uploads/", params={"mount": str(digest), "from": source_repo},
            scopes=[push_scope(repo), pull_scope(source_repo)], repository=repo, obj=obj, ok=(201, 202),
        ) as resp:
            if resp.status == 201:
                return None
            return self._location(resp, repo, obj)

    def _location(self, resp: Answer, repo: str, obj: str) -> URL:
        value = resp.headers.get("Location")
        if not value:
            raise RegistryError(resp.status, "NO_LOCATION", "upload response has no Location header",
                                registry=self.transport.registry, repository=repo, obj=obj)
        return self.transport.resolve(value, resp.url)

    async def _cancel(self, location: URL, repo: str) -> None:
        try:
            async with self.transport.request("DELETE", location, scopes=[push_scope(repo)], repository=repo,
                                              ok=(204, 200, 202, 404)):
                pass
        except RegistryError:
            pass  # best effort: an abandoned session expires on its own

    async def _upload(self, repo: str, digest: Digest, size: int, source: bytes | str | os.PathLike[str],
                      kind: TransferKind, location: URL | None, progress: Progress | None) -> None:
        t, obj, scopes = self.transport, f"blob {digest}", [push_scope(repo)]
        min_chunk = 0
        if location is None:
            async with t.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, repository=repo, obj=obj,
                                 ok=(202,)) as resp:
                location = self._location(resp, repo, obj)
                value = resp.headers.get("OCI-Chunk-Min-Length", "")
                min_chunk = int(value) if value.isdigit() else 0
        seen = _SourceHash(digest)
        if size <= self.monolithic_limit or isinstance(source, bytes):
            body = self._body(source, 0, size, seen, kind, progress)
            headers = {"Content-Type": _OCTET, "Content-Length": str(size)}
            await self._put(location.extend_query({"digest": str(digest)}), repo, obj, headers, body, seen, digest,
                            source, size)
            return
        chunk = max(self.chunk_size, min_chunk)
        offset = 0
        while offset < size:
            n = min(chunk, size - offset)
            headers = {"Content-Type": _OCTET, "Content-Length": str(n), "Content-Range": f"{offset}-{offset + n - 1}"}
            body = self._body(source, offset, n, seen, kind, progress)
            async with t.request("PATCH", location, scopes=scopes, repository=repo, obj=obj, ok=(202,),
                                 headers=headers, body=body, retry=False) as resp:
                location = self._location(resp, repo, obj)
            offset += n
        self._check_source(seen, digest, source, size, repo)
        await self._put(location.extend_query({"digest": str(digest)}), repo, obj, {"Content-Length": "0"}, b"",
                        seen, digest, source, size)

    async def _put(self, url: URL, repo: str, obj: str, headers: dict[str, str], body: Body, seen: _SourceHash,
                   digest: Digest, source: bytes | str | os.PathLike[str], size: int) -> None:
        try:
            async with self.transport.request("PUT", url, scopes=[push_scope(repo)], repository=repo, obj=obj,
                                              ok=(201,), headers=headers, body=body, retry=False) as resp:
                server = resp.headers.get("Docker-Content-Digest")
                if server and server != str(digest):
                    raise DigestMismatch(str(digest), server, registry=self.transport.registry, repository=repo,
                                         obj=obj, detail="the registry stored different content")
        except RegistryError:
            self._check_source(seen, digest, source, size, repo)  # a changed file is the better explanation
            raise
        self._check_source(seen, digest, source, size, repo)

    def _check_source(self, seen: _SourceHash, digest: Digest, source: bytes | str | os.PathLike[str], size: int,
                      repo: str) -> None:
        if isinstance(source, bytes) or seen.count != size:
            return
        actual = f"{digest.algorithm}:{seen.hasher.hexdigest()}"
        if actual != str(digest):
            raise DigestMismatch(str(digest), actual, registry=self.transport.registry, repository=repo,
                                 obj=f"blob {digest}", detail=f"file {os.fspath(source)} does not hold that content")

    def _body(self, source: bytes | str | os.PathLike[str], offset: int, length: int, seen: _SourceHash,
              kind: TransferKind, progress: Progress | None) -> Body:
        stats = self.transport.stats

        def sent(n: int) -> None:
            stats.add_up(kind, n)
            if progress is not None:
                progress(n)

        if isinstance(source, bytes):
            data = source[offset : offset + length]

            async def from_bytes() -> AsyncIterator[bytes]:
                for start in range(0, len(data), _READ_CHUNK):
                    piece = data[start : start + _READ_CHUNK]
                    sent(len(piece))
                    yield piece

            return from_bytes

        path = os.fspath(source)

        async def from_file() -> AsyncIterator[bytes]:
            # Local reads of 1 MiB from the page cache are short; reading inline keeps the stream simple.
            with open(path, "rb") as f:
                f.seek(offset)
                left = length
                position = offset
                while left > 0:
                    piece = f.read(min(_READ_CHUNK, left))
                    if not piece:
                        raise RegistryError(None, "SIZE_INVALID", f"file {path} ended early (truncated while pushing)")
                    left -= len(piece)
                    if position == seen.count:  # a resend (after a 401) must not be hashed twice
                        seen.update(piece)
                    position += len(piece)
                    sent(len(piece))
                    yield piece

        return from_file


def _digest_str(digest: Digest, data: bytes) -> str:
    hasher = digest.hasher()
    hasher.update(data)
    return f"{digest.algorithm}:{hasher.hexdigest()}"

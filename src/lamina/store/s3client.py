"""The S3 connection of the blob backend: the ``blobs = "s3://..."`` setting parsed, and one botocore
client per process (any S3 API: AWS, Ceph RGW, MinIO, R2).

Why botocore, called in threads: measured against Ceph RGW on loopback (``bench`` figures in
docs/registry.md "S3 blob storage"), botocore in a thread pool and aiobotocore moved 64 MiB multipart
uploads at the same 100-160 MB/s and downloads at 0.7-0.9 GB/s, small PUT+GET pairs in 6-9 ms each;
aiobotocore used half the CPU (about 1 ms less per MiB moved). The storage protocols are synchronous
where they are called from worker threads (``present`` checks inside metadata transactions, GC, the
CLI), so botocore fits them without a second event loop; AWS keeps it (boto3's core), and it brings the
standard credential chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``),
``AWS_PROFILE`` with ``~/.aws/credentials`` and ``~/.aws/config``, web identity, container and EC2
instance roles, in botocore's order.

Request checksums are sent only where the operation requires them (botocore's newer default, CRC32
trailers, is refused by S3 implementations that predate it, Ceph 16 among them); integrity is kept by
``Content-MD5`` on every write (the server rejects a body that does not match it) and by the registry's
own SHA-256 over the bytes it receives.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from .base import StoreError

__all__ = ["S3Client", "S3Location", "content_md5", "is_missing", "is_precondition_failed", "parse_s3_url"]

T = TypeVar("T")
_QUERY_KEYS = ("endpoint", "region", "redirect")


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where blobs live: ``s3://BUCKET/PREFIX?endpoint=URL&region=R&redirect=true|false``."""

    bucket: str
    prefix: str = ""  # without leading or trailing slash; "" for the bucket's root
    endpoint: str | None = None  # None: AWS's endpoint for the region
    region: str | None = None  # None: from the AWS chain (AWS_DEFAULT_REGION, config file)
    redirect: bool = True  # GET of a blob answered 307 to a presigned URL (False: streamed through)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self) -> str:
        query = [f"{k}={v}" for k, v in (("endpoint", self.endpoint), ("region", self.region)) if v]
        if not self.redirect:
            query.append("redirect=false")
        return f"s3://{self.bucket}/{self.prefix}" + (f"?{'&'.join(query)}" if query else "")


def parse_s3_url(url: str) -> S3Location:
    """Parse the ``blobs`` setting; ValueError naming the part that is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"blobs: expected s3://BUCKET/PREFIX?endpoint=URL&region=REGION, got {url!r}")
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63 or not all(c.isalnum() or c in ".-" for c in bucket) or bucket != bucket.lower():
        raise ValueError(f"blobs: {bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -) in {url!r}")
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _QUERY_KEYS:
            raise ValueError(f"blobs: unknown option {name!r} in {url!r} (known: {', '.join(_QUERY_KEYS)})")
        options[name] = value
    endpoint = options.get("endpoint") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise ValueError(f"blobs: endpoint {endpoint!r} is not an http:// or https:// URL")
    redirect_text = options.get("redirect", "true").lower()
    if redirect_text not in ("true", "false"):
        raise ValueError(f"blobs: redirect must be true or false, got {options['redirect']!r}")
    return S3Location(
        bucket=bucket,
        prefix=parts.path.strip("/"),
        endpoint=endpoint,
        region=options.get("region") or None,
        redirect=redirect_text == "true",
    )


def content_md5(data: bytes | bytearray | memoryview) -> str:
    """The ``Content-MD5`` header value: S3 refuses the write if the body it got hashes otherwise."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status or "")


def is_missing(exc: BaseException) -> bool:
    """A botocore error for an object or upload that does not exist."""
    return _error_code(exc) in ("NoSuchKey", "404", "NotFound", "NoSuchUpload")


def is_precondition_failed(exc: BaseException) -> bool:
    """A conditional write refused (If-None-Match: * on an existing key)."""
    return _error_code(exc) in ("PreconditionFailed", "412")


class S3Client:
    """One botocore S3 client per process (urllib3's pools must not cross a fork), thread-safe to call,
    and the threads its blocking calls run in from the event loop (:meth:`run`): a pool of its own, as
    large as the connection pool, so uploads in flight neither wait for asyncio's small default pool
    (CPU count + 4 threads) nor fill it for everything else."""

    def __init__(self, location: S3Location, max_connections: int = 32) -> None:
        self.location = location
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._client: tuple[int, Any] | None = None
        self._pool: tuple[int, ThreadPoolExecutor] | None = None

    def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``function(*args, **kwargs)`` in this process's S3 threads; await the result on the loop."""
        with self._lock:
            if self._pool is None or self._pool[0] != os.getpid():
                self._pool = (os.getpid(), ThreadPoolExecutor(self.max_connections, thread_name_prefix="lamina-s3"))
            pool = self._pool[1]
        return asyncio.get_running_loop().run_in_executor(pool, functools.partial(function, *args, **kwargs))

    @property
    def s3(self) -> Any:
        """The botocore client (created on first use in this process)."""
        found = self._client
        if found is not None and found[0] == os.getpid():
            return found[1]
        with self._lock:
            if self._client is None or self._client[0] != os.getpid():
                self._client = (os.getpid(), self._create())
            return self._client[1]

    def _create(self) -> Any:
        import botocore.config
        import botocore.session

        config = botocore.config.Config(
            s3={"addressing_style": "path" if self.location.endpoint else "auto"},
            signature_version="s3v4",
            max_pool_connections=self.max_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
        )
        session = botocore.session.get_session()
        return session.create_client(
            "s3", endpoint_url=self.location.endpoint, region_name=self.location.region, config=config
        )

    def check_access(self) -> None:
        """Fail at start, in one line, when the bucket cannot be reached with these credentials."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_bucket(Bucket=self.location.bucket)
        except ClientError as exc:
            code = _error_code(exc)
            hint = "create it first" if code in ("404", "NoSuchBucket") else "check the credentials (AWS chain)"
            raise StoreError(f"S3 bucket {self.location.bucket!r} at {self._where()}: {code}: {hint}") from None
        except BotoCoreError as exc:
            raise StoreError(f"S3 bucket {self.location.bucket!r} at {self._where()}: {exc}") from None

    def _where(self) -> str:
        return self.location.endpoint or f"AWS ({self.location.region or 'default region'})"

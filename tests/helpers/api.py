"""A few OCI distribution-spec calls made by hand with ``requests``, independent of lamina's client.

For tests that must control the exact bytes and headers on the wire (a manifest as BuildKit writes
it, a blob upload as BuildKit does it: POST then one PUT with ``?digest=``). Every call checks its
expected status and raises with the registry's error body otherwise.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urljoin

import requests

__all__ = ["ApiError", "blob_exists", "get_blob", "get_manifest", "push_blob", "put_manifest"]

TIMEOUT = 30


class ApiError(AssertionError):
    """An unexpected HTTP status; ``response`` keeps the status code and the error body."""

    def __init__(self, what: str, response: requests.Response) -> None:
        super().__init__(f"{what}: HTTP {response.status_code} {response.text[:500]}")
        self.response = response


def _expect(response: requests.Response, status: int, what: str) -> requests.Response:
    if response.status_code != status:
        raise ApiError(what, response)
    return response


def push_blob(base_url: str, name: str, data: bytes) -> str:
    """Upload ``data`` as BuildKit does (POST, then PUT ``?digest=`` with the body); return its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = _expect(requests.post(f"{base_url}/v2/{name}/blobs/uploads/", timeout=TIMEOUT), 202, "start upload")
    location = urljoin(base_url + "/", started.headers["Location"])
    sep = "&" if "?" in location else "?"
    done = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
    )
    _expect(done, 201, f"finish upload of {digest}")
    assert done.headers.get("Docker-Content-Digest", digest) == digest
    return digest


def blob_exists(base_url: str, name: str, digest: str) -> bool:
    response = requests.head(f"{base_url}/v2/{name}/blobs/{digest}", timeout=TIMEOUT)
    if response.status_code not in (200, 404):
        raise ApiError(f"HEAD blob {digest}", response)
    return response.status_code == 200


def get_blob(base_url: str, name: str, digest: str) -> bytes:
    response = _expect(requests.get(f"{base_url}/v2/{name}/blobs/{digest}", timeout=TIMEOUT), 200, f"GET {digest}")
    data = response.content
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} came back with other bytes"
    return data


def put_manifest(
    base_url: str, name: str, reference: str, body: bytes, media_type: str, expect: int = 201
) -> requests.Response:
    """PUT ``body`` as ``media_type``; return the response (status ``expect`` checked)."""
    response = requests.put(
        f"{base_url}/v2/{name}/manifests/{reference}",
        data=body,
        headers={"Content-Type": media_type},
        timeout=TIMEOUT,
    )
    return _expect(response, expect, f"PUT manifest {name}:{reference}")


def get_manifest(base_url: str, name: str, reference: str, accept: str, expect: int = 200) -> requests.Response:
    response = requests.get(f"{base_url}/v2/{name}/manifests/{reference}", headers={"Accept": accept}, timeout=TIMEOUT)
    return _expect(response, expect, f"GET manifest {name}:{reference}")

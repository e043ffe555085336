"""Malformed and hostile input against a real ``lamina registry serve`` process (issue 11): every bad
request answers a JSON 4xx in the registry's error format and logs one line, never a traceback or a 500.

- a manifest nested 1,100 levels deep: MANIFEST_INVALID 400 naming ``max_json_depth`` (was 500 RecursionError);
- a NUL byte in the path, a header over ``max_header_bytes``, a broken header or method: refused by
  aiohttp's HTTP parser before any handler runs (was an ERROR traceback and a text/plain 400);
- ``referrers?artifactType=`` with a raw ``+`` (was read as a space) and with ``%2B``;
- a blob DELETE that would break a manifest (config, layer, or a layer of an index's child): 405
  UNSUPPORTED (was 202), decided in the unlink's own transaction, so a concurrent manifest PUT cannot race it.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from regtools import descriptor, sha256

from helpers.registries import RegistryProcess, start_lamina

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> dict[str, Any]:
        return dict(json.loads(self.body)["errors"][0])


def call(server: RegistryProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def raw(server: RegistryProcess, data: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes no HTTP client library would, return (status line, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def push_blob(server: RegistryProcess, repo: str, data: bytes) -> str:
    answer = call(server, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data,
                  {"Content-Type": "application/octet-stream"})
    assert answer.status == 201, answer
    return sha256(data)


def push_manifest(server: RegistryProcess, repo: str, reference: str, doc: dict[str, Any] | bytes,
                  media_type: str = OCI_MANIFEST) -> Answer:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return call(server, "PUT", f"/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type})


def image(server: RegistryProcess, repo: str, **extra: Any) -> tuple[dict[str, Any], bytes, bytes]:
    """An image manifest whose config and layer are pushed (not the manifest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = uuid.uuid4().bytes * 8
    push_blob(server, repo, config)
    push_blob(server, repo, layer)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(config, OCI_CONFIG),
           "layers": [descriptor(layer, LAYER)], **extra}
    return doc, config, layer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    process = start_lamina(tmp_path_factory.mktemp("malformed"), workers=1)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """The two limits set low: a 2 KiB header line, JSON 16 levels deep."""
    process = start_lamina(tmp_path_factory.mktemp("tight"), workers=1,
                           config="max_header_bytes = 2048\nmax_json_depth = 16\n")
    try:
        yield process
    finally:
        process.stop()


def log_lines_after(server: RegistryProcess, mark: int) -> list[str]:
    return server.log_path.read_bytes()[mark:].decode(errors="replace").splitlines()


def test_a_deeply_nested_manifest_is_manifest_invalid(server: RegistryProcess) -> None:
    doc, _, _ = image(server, "deep/app")
    nested = json.dumps(doc)[:-1].encode() + b', "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    assert len(nested) < 3000
    mark = server.log_path.stat().st_size
    answer = push_manifest(server, "deep/app", "nested", nested)
    assert answer.status == 400, answer
    assert answer.error["code"] == "MANIFEST_INVALID"
    assert "more than 64 levels deep" in answer.error["message"] and "max_json_depth" in answer.error["message"]
    assert not any("Traceback" in line or "RecursionError" in line for line in log_lines_after(server, mark))
    shallow = json.dumps(doc)[:-1].encode() + b', "x": ' + b"[" * 63 + b"]" * 63 + b"}"  # 64 with the object
    assert push_manifest(server, "deep/app", "shallow", shallow).status == 201


def test_the_console_shows_an_image_whose_config_nests_deeply(server: RegistryProcess) -> None:
    """The console parses pushed config blobs (its platform column): one nested 1,100 levels deep is shown
    without a platform instead of a 500."""
    config = b'{"os": "linux", "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    push_blob(server, "deep/console", config)
    layer = push_blob(server, "deep/console", uuid.uuid4().bytes)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(config, OCI_CONFIG),
           "layers": [{"mediaType": LAYER, "digest": layer, "size": 16}]}
    assert push_manifest(server, "deep/console", "v1", doc).status == 201
    page = call(server, "GET", "/ui/r/deep/console")
    assert page.status == 200 and b"v1" in page.body, page


def test_max_json_depth_is_a_setting(tight: RegistryProcess) -> None:
    doc, _, _ = image(tight, "deep/tight")
    at_limit = json.dumps({**doc, "x": [[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}).encode()  # 1 + 15
    over = json.dumps({**doc, "x": [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}).encode()  # 1 + 16
    assert push_manifest(tight, "deep/tight", "at", at_limit).status == 201
    refused = push_manifest(tight, "deep/tight", "over", over)
    assert refused.status == 400 and "more than 16 levels deep" in refused.error["message"], refused


MALFORMED = {
    "NUL in the path": (b"GET /v2/a\x00b/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "header over 8 KiB": (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    "request line over 8 KiB": (b"GET /v2/" + b"a" * 9000 + b"/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    "header without colon": (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n", 400),
    "invalid method": (b"G(T /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_answer_json_and_log_one_line(server: RegistryProcess, case: str) -> None:
    request, expected = MALFORMED[case]
    mark = server.log_path.stat().st_size
    status, headers, body = raw(server, request)
    assert status.split()[1] == str(expected), (status, body)
    assert headers["content-type"].startswith("application/json")
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    error = json.loads(body)["errors"][0]
    assert error["code"] == "UNSUPPORTED" and error["message"].strip(), error
    if expected == 431:
        assert "8192 bytes (max_header_bytes)" in error["message"]
    lines = log_lines_after(server, mark)
    assert len(lines) == 1 and "WARNING" in lines[0] and "malformed request from 127.0.0.1" in lines[0], lines
    assert call(server, "GET", "/v2/").status == 200  # and the server carries on


def test_max_header_bytes_is_a_setting(tight: RegistryProcess) -> None:
    assert call(tight, "GET", "/v2/", headers={"X-Fill": "a" * 1500}).status == 200
    status, _, body = raw(tight, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Fill: " + b"a" * 3000 + b"\r\n\r\n")
    assert status.split()[1] == "431", status
    assert "2048 bytes (max_header_bytes)" in json.loads(body)["errors"][0]["message"]


def test_referrers_artifact_type_with_a_raw_plus_or_percent_2b(server: RegistryProcess) -> None:
    repo = "refs/plus"
    subject, _, _ = image(server, repo)
    subject_body = json.dumps(subject).encode()
    assert push_manifest(server, repo, "subject", subject_body).status == 201
    empty = push_blob(server, repo, b"{}")
    artifact = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.test+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
                "subject": descriptor(subject_body, OCI_MANIFEST)}
    body = json.dumps(artifact).encode()
    assert push_manifest(server, repo, sha256(body), body).status == 201
    for query in ("application/vnd.test+json", "application/vnd.test%2Bjson", "application%2Fvnd.test%2bjson"):
        answer = call(server, "GET", f"/v2/{repo}/referrers/{sha256(subject_body)}?artifactType={query}")
        assert answer.status == 200 and answer.headers["oci-filters-applied"] == "artifactType", answer
        assert [m["digest"] for m in json.loads(answer.body)["manifests"]] == [sha256(body)], query
    referrers = f"/v2/{repo}/referrers/{sha256(subject_body)}"
    spaced = call(server, "GET", f"{referrers}?artifactType=application/vnd.test%20json")
    assert spaced.status == 400 and spaced.error["code"] == "UNSUPPORTED", spaced  # a space is no media type


def test_a_blob_a_manifest_uses_is_not_deleted(server: RegistryProcess) -> None:
    repo = "blobs/in-use"
    doc, config, layer = image(server, repo)
    child = json.dumps(doc).encode()
    assert push_manifest(server, repo, sha256(child), child).status == 201  # untagged: only the index names it
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [descriptor(child, OCI_MANIFEST)]}).encode()
    assert push_manifest(server, repo, "latest", index, OCI_INDEX).status == 201
    for blob in (config, layer):
        refused = call(server, "DELETE", f"/v2/{repo}/blobs/{sha256(blob)}")
        assert refused.status == 405, refused
        assert refused.error["code"] == "UNSUPPORTED" and refused.headers["allow"] == "GET, HEAD"
        assert refused.error["detail"] == {"digest": sha256(blob), "manifest": sha256(child)}
        assert f"used by manifest {sha256(child)} in {repo}" in refused.error["message"]
        assert call(server, "GET", f"/v2/{repo}/blobs/{sha256(blob)}").status == 200
    spare = push_blob(server, repo, b"nobody uses me " + uuid.uuid4().bytes)
    assert call(server, "DELETE", f"/v2/{repo}/blobs/{spare}").status == 202  # unreferenced: still deletes
    assert call(server, "GET", f"/v2/{repo}/blobs/{spare}").status == 404
    assert call(server, "DELETE", f"/v2/{repo}/manifests/{sha256(index)}").status == 202
    assert call(server, "DELETE", f"/v2/{repo}/blobs/{sha256(layer)}").status == 405  # the child still stands
    assert call(server, "DELETE", f"/v2/{repo}/manifests/{sha256(child)}").status == 202
    assert call(server, "DELETE", f"/v2/{repo}/blobs/{sha256(layer)}").status == 202


def test_a_blob_delete_cannot_race_a_manifest_put(server: RegistryProcess) -> None:
    """Twenty rounds of a manifest PUT and a DELETE of its config at once: either the PUT wins (the
    DELETE answers 405) or the DELETE does (the PUT answers MANIFEST_BLOB_UNKNOWN); never a stored
    manifest whose config is gone."""
    repo = "blobs/race"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for n in range(20):
            doc, config, _ = image(server, repo)
            put = pool.submit(push_manifest, server, repo, f"r{n}", doc)
            delete = pool.submit(call, server, "DELETE", f"/v2/{repo}/blobs/{sha256(config)}")
            outcome = (put.result().status, delete.result().status)
            assert outcome in {(201, 405), (400, 202)}, (outcome, put.result(), delete.result())
            stored = call(server, "GET", f"/v2/{repo}/manifests/r{n}").status == 200
            assert stored == (call(server, "HEAD", f"/v2/{repo}/blobs/{sha256(config)}").status == 200)

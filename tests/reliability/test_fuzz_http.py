"""HTTP-level fuzzing (hypothesis) of a real ``lamina registry serve``: requests built from the API's pieces —
methods, repository names (valid, odd, hostile), references and digests, upload sessions that exist,
query strings (``n``/``last`` of tags and the catalog, ``artifactType`` of referrers with ``+`` and
``%2B``, ``digest``/``mount``/``from`` of uploads), ``Content-Range``, ``Range``, ``Content-Type``,
``Accept`` and conditional headers, and bodies (mutated manifests, random bytes). Every answer is below
500, every error under ``/v2/`` is the spec's JSON error body, and the server logs no traceback."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helpers.api import push_blob, put_manifest
from helpers.registries import RegistryProcess, start_lamina
from lamina.oci import mediatypes as mt
from reliability import SESSIONS_CONFIG

pytestmark = [pytest.mark.slow]

CONFIG = b'{"architecture": "amd64", "os": "linux"}'
LAYER = b"fuzz layer " * 100


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
    "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256(LAYER), "size": len(LAYER)}],
}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry with one image (fuzz/app:v1) to aim at; stopped after the module. Each example may open an
    upload session it never closes: the session limits are lifted so thousands of examples can run."""
    with start_lamina(tmp_path_factory.mktemp("fuzz-http"), workers=1, config=SESSIONS_CONFIG) as process:
        push_blob(process.url, "fuzz/app", CONFIG)
        push_blob(process.url, "fuzz/app", LAYER)
        put_manifest(process.url, "fuzz/app", "v1", MANIFEST, mt.OCI_MANIFEST)
        yield process


def _send(server: RegistryProcess, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body if method not in ("GET", "HEAD") or body else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _new_session(server: RegistryProcess) -> str:
    """The path of a fresh upload session of fuzz/app (its Location)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v2/fuzz/app/blobs/uploads/")
        response = conn.getresponse()
        response.read()
        assert response.status == 202, response.status
        return str(response.headers["Location"])
    finally:
        conn.close()


names = st.sampled_from(["fuzz/app", "fuzz/missing", "a", "A/b", "a..b", "a/-b", "a" * 300, "x/" * 40 + "y",
                         "%2e%2e/etc", "..", "a%00b", "a%20b", "%ff", "é", "_catalog", "a/manifests/b"])
digests = st.sampled_from([sha256(LAYER), sha256(CONFIG), sha256(MANIFEST), sha256(b"none"), "sha256:", "sha256:xyz",
                           "sha512:" + "0" * 128, "md5:00", "sha256:" + "A" * 64, "x" * 200, "%00"])
references = st.one_of(digests, st.sampled_from(["v1", "latest", ".INVALID_MANIFEST_NAME", "-x", "a" * 200, "%3A", ""]))
query_values = st.one_of(st.sampled_from(["", "0", "1", "-1", "99999999999", "1e3", "abc", "a+b", "a%2Bb",
                                          "application/vnd.example+json", "application%2Fvnd.x%2Bjson", "%00", "%ff",
                                          sha256(LAYER), "fuzz/app", "v1"]),
                         st.text(alphabet="abc019/+%:=&", max_size=12))
query = st.lists(st.tuples(st.sampled_from(["n", "last", "artifactType", "digest", "mount", "from", "x"]),
                           query_values), max_size=3).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv))
header_values = st.one_of(
    st.sampled_from(["0-99", "bytes 0-99/100", "0-0", "5-1", "-1-2", "0-99999999999999999999", "bytes=0-10",
                     "bytes=-5", "bytes=5-", "bytes=0-0,2-3", "*", "abc", "0-1/*", mt.OCI_MANIFEST, mt.OCI_INDEX,
                     "application/json; charset=utf-8", '"sha256:x"', "*/*"]),
    st.text(alphabet="abc0189-/=*, ", max_size=20))
headers = st.dictionaries(st.sampled_from(["Content-Range", "Range", "Content-Type", "Accept", "If-Match",
                                           "If-None-Match"]), header_values, max_size=3)
bodies = st.one_of(st.just(b""), st.binary(max_size=200), st.just(MANIFEST), st.just(b"[" * 2000),
                   st.sampled_from([b'{"schemaVersion": 2, "mediaType": []}', b'{"schemaVersion": 2}', b"null"]))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]))
    name = draw(names)
    kind = draw(st.sampled_from(["manifest", "blob", "uploads", "session", "tags", "referrers", "catalog", "base"]))
    path = {
        "manifest": f"/v2/{name}/manifests/{draw(references)}",
        "blob": f"/v2/{name}/blobs/{draw(digests)}",
        "uploads": f"/v2/{name}/blobs/uploads/",
        "session": "SESSION",
        "tags": f"/v2/{name}/tags/list",
        "referrers": f"/v2/{name}/referrers/{draw(digests)}",
        "catalog": "/v2/_catalog",
        "base": "/v2/",
    }[kind]
    q = draw(query)
    if q:
        path += "?" + q
    return method, path, draw(headers), draw(bodies)


def _check(server: RegistryProcess, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
    if path.startswith("SESSION"):  # an upload session that exists, with the drawn query appended
        location, _, drawn = _new_session(server), "", path[len("SESSION"):].lstrip("?")
        path = f"{location}{'&' if '?' in location else '?'}{drawn}" if drawn else location
    path = quote(path, safe="/?&=%:+@,;*-._~")  # keep what was drawn, escape only what a URL cannot carry
    status, answer = _send(server, method, path, headers, body)
    assert status < 500, f"{method} {path} {headers} -> HTTP {status} {answer[:300]!r}"
    # 416 (a Range past the blob) has no error body in the spec: its Content-Range says the size
    if status >= 400 and status != 416 and method != "HEAD" and path.startswith("/v2/"):
        doc = json.loads(answer)
        assert doc["errors"] and {"code", "message"} <= set(doc["errors"][0]), (method, path, answer[:300])


@given(requests())
@example(("PUT", "/v2/fuzz/app/manifests/t", {"Content-Type": mt.OCI_MANIFEST}, b'{"schemaVersion":2,"mediaType":{}}'))
@example(("PATCH", "SESSION", {"Content-Range": "0-99999999999999999999"}, b"abc"))
@example(("GET", "/v2/fuzz/app/referrers/" + sha256(MANIFEST) + "?artifactType=a+b", {}, b""))
@example(("GET", "/v2/fuzz/app/tags/list?n=-1&last=%ff", {}, b""))
@example(("GET", "/v2/fuzz/app/blobs/" + sha256(LAYER), {"Range": "bytes=5-1"}, b""))
def test_no_request_gets_a_5xx(server: RegistryProcess, request_parts: tuple[str, str, dict[str, str], bytes]) -> None:
    _check(server, *request_parts)


def test_no_traceback_in_the_log_after_fuzzing(server: RegistryProcess) -> None:
    assert server.running
    log = Path(server.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]

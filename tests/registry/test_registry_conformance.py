"""The OCI distribution-spec v1.1 conformance suite's requests and expected statuses, replayed against a
real ``lamina registry serve`` process (the suite's Go binary cannot be built offline).

Workflows as in conformance/01_pull_test.go, 02_push_test.go, 03_discovery_test.go and
04_management_test.go, in the suite's order and in one namespace, so blobs are shared between workflows
as they are there; data as setup.go builds it (one config per workflow with a random author, one shared
gzip layer, manifests with unknown fields, referrers with annotations, ``.INVALID_MANIFEST_NAME``). Every
combination the suite has switches for: ``OCI_AUTOMATIC_CROSSMOUNT`` on (``automatic_crossmount = true``,
the default) and off, and ``OCI_DELETE_MANIFEST_BEFORE_BLOBS`` true (the default) and false. Where the
suite accepts several statuses, lamina's documented one is asserted.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import pytest
from regtools import descriptor, sha256

from helpers.ceph import s3_url
from helpers.postgres import scratch_database
from helpers.registries import RegistryProcess, start_lamina

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
ANNOTATION = "org.opencontainers.conformance.test"
TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
TYPE_INDEX = "application/vnd.food.stand"
# every status the suite accepts for a blob DELETE in a teardown: 2xx, 404 (already gone), 405 (refused)
TEARDOWN_BLOB_DELETE = {202, 404, 405}


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent="\t").encode()  # Go's json.MarshalIndent(v, "", "\t")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        return str(self.json()["errors"][0]["code"])


@dataclass
class Registry:
    """The suite's reggie client, reduced to what it does: one request per call; a redirect of a GET or HEAD
    (the 307 to a presigned S3 URL) followed as reggie's HTTP library (resty) follows it, up to 10 times."""

    host: str
    port: int
    name: str
    redirects: int = 0  # followed so far

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                query: dict[str, str] | None = None, name: str | None = None) -> Response:
        path = path.replace("<name>", name or self.name)
        if query:
            path += ("&" if "?" in path else "?") + urlencode(query)
        all_headers = {"User-Agent": "distribution-spec-conformance-tests", **(headers or {})}
        if body is not None and "Content-Length" not in all_headers:
            all_headers["Content-Length"] = str(len(body))
        host, port = self.host, self.port
        for _ in range(10):
            conn = http.client.HTTPConnection(host, port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=all_headers)
                response = conn.getresponse()
                got = Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
            finally:
                conn.close()
            if got.status not in (301, 302, 303, 307, 308) or method not in ("GET", "HEAD"):
                return got
            target = urlsplit(urljoin(f"http://{host}:{port}{path}", got.headers["location"]))
            assert target.scheme == "http" and target.hostname, got.headers["location"]  # loopback RGW only
            host, port = target.hostname, target.port or 80
            path = target.path + (f"?{target.query}" if target.query else "")
            self.redirects += 1
        raise AssertionError(f"{method} {path}: more than 10 redirects")

    def location(self, response: Response) -> str:
        """The relative location (reggie's GetRelativeLocation)."""
        value = response.headers.get("location", "")
        assert value, f"no Location header: {response}"
        return value.split(f"{self.host}:{self.port}", 1)[-1]

    def push_blob(self, data: bytes) -> None:
        session = self.request("POST", "/v2/<name>/blobs/uploads/")
        put = self.request("PUT", self.location(session), data, {"Content-Type": "application/octet-stream"},
                           {"digest": sha256(data)})
        assert 200 <= put.status < 300, put

    def push_manifest(self, reference: str, data: bytes, media_type: str = OCI_MANIFEST) -> Response:
        response = self.request("PUT", f"/v2/<name>/manifests/{quote(reference, safe=':')}", data,
                                {"Content-Type": media_type})
        assert 200 <= response.status < 300, response
        return response


def random_blob(size: int) -> bytes:
    return os.urandom(size)


def gzip_layer() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        text = b"you bothered to find out what was in here. Congratulations!\n"
        info = tarfile.TarInfo("test.txt")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class SuiteData:
    """setup.go's fixtures: a config and manifest per workflow (the author makes each digest unique)."""

    layer: bytes = field(default_factory=gzip_layer)
    configs: list[bytes] = field(default_factory=list)
    manifests: list[bytes] = field(default_factory=list)
    blob_a: bytes = field(default_factory=lambda: random_blob(42))
    blob_b: bytes = field(default_factory=lambda: random_blob(42))
    ref_blob_a: bytes = b"NHL Peanut Butter on my NHL bagel"
    ref_blob_b: bytes = b"NBA Strawberry Jam on my NBA croissant"
    empty_json: bytes = b"{}"

    def __post_init__(self) -> None:
        for _ in range(5):
            author = uuid.uuid4().hex[:16]
            config = canonical({"author": author, "architecture": "amd64", "os": "linux",
                                "rootfs": {"type": "layers", "diff_ids": []}})
            self.configs.append(config)
            self.manifests.append(canonical({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {**descriptor(config, OCI_CONFIG), "data": base64.b64encode(config).decode(),
                           "newUnspecifiedField": base64.b64encode(b"hello world").decode()},
                "layers": [descriptor(self.layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
            }))

    def referrer(self, subject: bytes, artifact_type: str, blob: bytes, *, in_config: bool,
                 annotation: str | None) -> bytes:
        """An artifact whose type is its config media type (``in_config``) or its artifactType field."""
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if in_config:
            doc |= {"config": descriptor(blob, artifact_type), "layers": [descriptor(self.empty_json, EMPTY_JSON)]}
        else:
            doc |= {"artifactType": artifact_type, "config": descriptor(self.empty_json, EMPTY_JSON),
                    "layers": [descriptor(blob, artifact_type)]}
        doc["subject"] = descriptor(subject, OCI_MANIFEST)
        if annotation is not None:
            doc["annotations"] = {ANNOTATION: annotation}
        return canonical(doc)


@dataclass
class Run:
    registry: Registry
    data: SuiteData
    crossmount_namespace: str
    automatic_crossmount: bool
    delete_manifest_before_blobs: bool
    live: dict[str, set[str]] = field(default_factory=dict)  # manifest digest -> the blobs it uses

    def put(self, reference: str, data: bytes, media_type: str = OCI_MANIFEST) -> Response:
        """PUT a manifest (as the suite does), remembering which blobs it uses while it stands."""
        response = self.registry.push_manifest(reference, data, media_type)
        doc = json.loads(data)
        self.live[sha256(data)] = {doc["config"]["digest"], *(d["digest"] for d in doc["layers"])} if (
            media_type == OCI_MANIFEST) else set()
        return response

    def delete_manifests(self, digests: list[str]) -> None:
        for digest in digests:
            response = self.registry.request("DELETE", f"/v2/<name>/manifests/{digest}")
            assert response.status in (202, 404), (digest, response)  # the suite: 2xx or 405; 404 if shared
            self.live.pop(digest, None)

    def delete_blobs(self, digests: list[str], referenced: set[str]) -> None:
        """A blob a remaining manifest uses is refused (405 UNSUPPORTED); any other is unlinked (202)."""
        for digest in digests:
            response = self.registry.request("DELETE", f"/v2/<name>/blobs/{digest}")
            assert response.status in TEARDOWN_BLOB_DELETE, (digest, response)
            if digest in referenced:
                assert response.status == 405 and response.error_code() == "UNSUPPORTED", (digest, response)
                assert "GET" in response.headers["allow"]
            else:
                assert response.status in (202, 404), (digest, response)

    def still_referenced(self) -> set[str]:
        """Blob digests the repository's remaining manifests use."""
        return set().union(*self.live.values())

    # -- 01 pull ---------------------------------------------------------------------------------------
    def pull(self) -> None:
        r, d = self.registry, self.data
        for blob in (d.configs[0], d.layer):
            r.push_blob(blob)
        self.put("tagtest0", d.manifests[0])
        r.push_blob(d.configs[1])
        self.put(sha256(d.manifests[1]), d.manifests[1])
        tag = r.request("GET", "/v2/<name>/tags/list").json()["tags"][0]
        assert r.request("HEAD", f"/v2/<name>/blobs/{sha256(b'hello world')}").status == 404
        head = r.request("HEAD", f"/v2/<name>/blobs/{sha256(d.configs[0])}")
        assert head.status == 200 and head.headers["docker-content-digest"] == sha256(d.configs[0])
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(b'hello world')}").status == 404
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(d.configs[0])}").status == 200
        for method in ("HEAD", "GET"):
            missing = r.request(method, f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}")
            assert missing.status == 404, (method, missing)
            if method == "GET":
                assert missing.error_code() == "MANIFEST_UNKNOWN"
            for reference in (sha256(d.manifests[0]), sha256(d.manifests[1]), tag):
                found = r.request(method, f"/v2/<name>/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
                assert found.status == 200, (method, reference, found)
                if reference != tag:
                    assert found.headers["docker-content-digest"] == reference
        wrong = r.request("GET", "/v2/<name>/manifests/sha256:totallywrong", b"blablabla",
                          {"Content-Type": OCI_MANIFEST})
        assert wrong.status == 400 and wrong.error_code() == "DIGEST_INVALID", wrong
        manifests = [sha256(d.manifests[0]), sha256(d.manifests[1])]
        blobs = [sha256(d.configs[0]), sha256(d.configs[1]), sha256(d.layer)]
        self.teardown(manifests, blobs)

    def teardown(self, manifests: list[str], blobs: list[str]) -> None:
        if self.delete_manifest_before_blobs:
            self.delete_manifests(manifests)
            self.delete_blobs(blobs, self.still_referenced())
        else:
            self.delete_blobs(blobs, self.still_referenced())
            self.delete_manifests(manifests)

    # -- 02 push ---------------------------------------------------------------------------------------
    def push(self) -> None:
        r, d = self.registry, self.data
        r.push_blob(d.empty_json)
        r.push_blob(d.ref_blob_a)
        # Blob Upload Streamed
        session = r.request("POST", "/v2/<name>/blobs/uploads/")
        patched = r.request("PATCH", r.location(session), d.blob_a, {"Content-Type": "application/octet-stream"})
        assert patched.status == 202, patched
        done = r.request("PUT", r.location(patched), b"", {"Content-Type": "application/octet-stream"},
                         {"digest": sha256(d.blob_a)})
        assert done.status == 201 and done.headers["location"], done
        # Blob Upload Monolithic
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(b'hello world')}").status == 404
        octet = {"Content-Type": "application/octet-stream"}
        mono = r.request("POST", "/v2/<name>/blobs/uploads/", d.configs[1], octet, {"digest": sha256(d.configs[1])})
        assert mono.status == 201 and mono.headers["location"], mono
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(d.configs[1])}").status == 200
        session = r.request("POST", "/v2/<name>/blobs/uploads/")
        assert session.status == 202, session
        put = r.request("PUT", r.location(session), d.configs[1], {"Content-Type": "application/octet-stream"},
                        {"digest": sha256(d.configs[1])})
        assert put.status == 201 and put.headers["location"], put
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(d.configs[1])}").status == 200
        session = r.request("POST", "/v2/<name>/blobs/uploads/")
        put = r.request("PUT", r.location(session), d.layer, {"Content-Type": "application/octet-stream"},
                        {"digest": sha256(d.layer)})
        assert put.status == 201, put
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(d.layer)}").status == 200
        self.chunked()
        self.cross_mount()
        self.manifest_upload()

    def chunked(self) -> None:
        r, blob = self.registry, self.data.blob_b
        first, second = blob[:22], blob[22:]
        octet = {"Content-Type": "application/octet-stream"}
        session = r.request("POST", "/v2/<name>/blobs/uploads/", b"")
        tail = {**octet, "Content-Range": f"22-{len(blob) - 1}"}
        out_of_order = r.request("PATCH", r.location(session), second, tail)
        assert out_of_order.status == 416, out_of_order
        session = r.request("POST", "/v2/<name>/blobs/uploads/", b"")
        chunk = r.request("PATCH", r.location(session), first, {**octet, "Content-Range": "0-21"})
        assert chunk.status == 202 and chunk.headers["range"] == "0-21", chunk
        retry = r.request("PATCH", r.location(session), first, {**octet, "Content-Range": "0-21"})
        assert retry.status == 416, retry
        stale = r.request("GET", r.location(session))
        assert stale.status == 204 and stale.headers["location"] and stale.headers["range"] == "0-21", stale
        chunk = r.request("PATCH", r.location(stale), second, tail)
        assert chunk.status == 202 and chunk.headers["range"] == f"0-{len(blob) - 1}", chunk
        done = r.request("PUT", r.location(chunk), b"", octet, {"digest": sha256(blob)})
        assert done.status == 201 and done.headers["location"], done

    def cross_mount(self) -> None:
        r, other = self.registry, self.crossmount_namespace
        uploads = "/v2/<name>/blobs/uploads/"
        without_from = r.request("POST", uploads, name=other, query={"mount": sha256(b"hello world")})
        assert without_from.status == 202 and without_from.headers["location"], without_from
        mounted = r.request("POST", "/v2/<name>/blobs/uploads/", name=other,
                            query={"mount": sha256(self.data.blob_a), "from": r.name})
        assert mounted.status == 201, mounted  # lamina mounts what the source has
        assert r.location(mounted) == f"/v2/{other}/blobs/{sha256(self.data.blob_a)}"
        assert r.request("GET", r.location(mounted)).status == 200
        # without from= a blob the target already has: 201 with automatic cross-mount on, 202 (a session) off
        automatic = r.request("POST", uploads, name=other, query={"mount": sha256(self.data.blob_a)})
        if self.automatic_crossmount:
            assert automatic.status == 201, automatic
        else:
            assert automatic.status == 202, automatic
            assert r.location(automatic).startswith(f"/v2/{other}/blobs/uploads/"), automatic

    def manifest_upload(self) -> None:
        r, d = self.registry, self.data
        missing = r.request("GET", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}")
        assert missing.status == 404 and missing.error_code() == "MANIFEST_UNKNOWN", missing
        for i in range(4):
            put = self.put(f"test{i}", d.manifests[1])
            assert put.status == 201 and put.headers["location"], put
        empty = canonical({"schemaVersion": 2, "config": descriptor(d.configs[1], OCI_CONFIG), "layers": []})
        refused = r.request("PUT", "/v2/<name>/manifests/emptylayer", empty, {"Content-Type": OCI_MANIFEST})
        assert refused.status == 400 and refused.error_code() == "MANIFEST_INVALID", refused  # allow_empty_layers
        got = r.request("GET", f"/v2/<name>/manifests/{sha256(d.manifests[1])}", headers={"Accept": OCI_MANIFEST})
        assert got.status == 200, got
        config_type = d.referrer(d.manifests[4], TYPE_A, d.ref_blob_a, in_config=True, annotation=None)
        artifact_type = d.referrer(d.manifests[4], TYPE_A, d.ref_blob_a, in_config=False, annotation=None)
        for doc in (config_type, artifact_type):
            self.put(sha256(doc), doc)
        r.push_blob(d.configs[0])
        self.put("tagtest0", d.manifests[0])
        index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": TYPE_INDEX,
                           "manifests": [descriptor(d.manifests[0], OCI_MANIFEST)],
                           "annotations": {ANNOTATION: "test index"}})
        self.put(sha256(index), index, OCI_INDEX)
        nested = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": TYPE_INDEX,
                            "manifests": [descriptor(index, OCI_INDEX)], "annotations": {ANNOTATION: "test index"}})
        self.put(sha256(nested), nested, OCI_INDEX)
        dangling = d.referrer(d.manifests[3], TYPE_B, d.ref_blob_b, in_config=False, annotation=None)
        r.push_blob(d.ref_blob_b)
        put = self.put(sha256(dangling), dangling)
        assert put.headers["oci-subject"] == sha256(d.manifests[3]), put
        manifests = [sha256(d.manifests[1]), sha256(config_type), sha256(artifact_type)]
        blobs = [sha256(d.configs[1]), sha256(d.layer), sha256(d.empty_json)]
        self.teardown(manifests, blobs)

    # -- 03 discovery ------------------------------------------------------------------------------------
    def discovery(self) -> None:
        r, d = self.registry, self.data
        r.push_blob(d.configs[2])
        r.push_blob(d.layer)
        for i in range(4):
            for tag in (f"test{i}", f"TEST{i}"):
                self.put(tag, d.manifests[2])
        r.push_blob(d.empty_json)
        r.push_blob(d.ref_blob_a)
        subject = d.manifests[4]
        refs = {
            "a-config": d.referrer(subject, TYPE_A, d.ref_blob_a, in_config=True, annotation="test config a"),
            "a-layer": d.referrer(subject, TYPE_A, d.ref_blob_a, in_config=False, annotation="test layer a"),
        }
        for doc in refs.values():
            self.put(sha256(doc), doc)  # before its subject exists
        index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": TYPE_INDEX,
                           "manifests": [descriptor(refs["a-config"], OCI_MANIFEST),
                                         descriptor(refs["a-layer"], OCI_MANIFEST)],
                           "subject": descriptor(subject, OCI_MANIFEST), "annotations": {ANNOTATION: "test index"}})
        self.put(sha256(index), index, OCI_INDEX)
        r.push_blob(d.configs[4])
        self.put("tagtest0", subject)
        r.push_blob(d.ref_blob_b)
        refs["b-config"] = d.referrer(subject, TYPE_B, d.ref_blob_b, in_config=True, annotation="test config b")
        refs["b-layer"] = d.referrer(subject, TYPE_B, d.ref_blob_b, in_config=False, annotation="test layer b")
        dangling = d.referrer(d.manifests[3], TYPE_B, d.ref_blob_b, in_config=False, annotation=None)
        for doc in (refs["b-config"], refs["b-layer"], dangling):
            self.put(sha256(doc), doc)
        annotations = {sha256(doc): "test " + " ".join(reversed(key.split("-"))) for key, doc in refs.items()}
        annotations[sha256(index)] = "test index"

        tags = r.request("GET", "/v2/<name>/tags/list")
        assert tags.status == 200, tags
        names = tags.json()["tags"]
        assert names in (sorted(names), sorted(names, key=str.lower)), names
        half = len(names) // 2
        page = r.request("GET", "/v2/<name>/tags/list", query={"n": str(half)})
        assert page.status == 200 and len(page.json()["tags"]) == half, page
        last = page.json()["tags"][half - 1]
        after = r.request("GET", "/v2/<name>/tags/list", query={"n": str(half), "last": last})
        assert after.status == 200 and len(after.json()["tags"]) <= half and last not in after.json()["tags"]

        none = r.request("GET", f"/v2/<name>/referrers/{sha256(b'hello world')}")
        assert none.status == 200 and none.headers["content-type"] == OCI_INDEX and none.json()["manifests"] == []
        listed = r.request("GET", f"/v2/<name>/referrers/{sha256(subject)}")
        assert listed.status == 200 and listed.headers["content-type"] == OCI_INDEX, listed
        entries = listed.json()["manifests"]
        assert len(entries) == 5, entries
        assert {e["digest"]: e["annotations"][ANNOTATION] for e in entries} == annotations
        filtered = r.request("GET", f"/v2/<name>/referrers/{sha256(subject)}", query={"artifactType": TYPE_A})
        assert filtered.status == 200 and filtered.headers["oci-filters-applied"] == "artifactType", filtered
        assert sorted(e["digest"] for e in filtered.json()["manifests"]) == sorted(
            sha256(refs[k]) for k in ("a-config", "a-layer"))
        missing_subject = r.request("GET", f"/v2/<name>/referrers/{sha256(d.manifests[3])}")
        assert [e["digest"] for e in missing_subject.json()["manifests"]] == [sha256(dangling)]
        manifests = [sha256(d.manifests[2]), *map(sha256, refs.values()), sha256(index), sha256(subject),
                     sha256(dangling)]
        blobs = [sha256(d.configs[2]), sha256(d.layer), sha256(d.empty_json), sha256(d.ref_blob_a),
                 sha256(d.configs[4]), sha256(d.ref_blob_b)]
        self.teardown(manifests, blobs)

    # -- 04 content management ----------------------------------------------------------------------------
    def management(self) -> None:
        r, d = self.registry, self.data
        r.push_blob(d.configs[3])
        r.push_blob(d.layer)
        self.put("tagtest0", d.manifests[3])
        count = len(r.request("GET", "/v2/<name>/tags/list").json()["tags"])
        untag = r.request("DELETE", "/v2/<name>/manifests/tagtest0")
        assert untag.status == 202, untag
        deleted = r.request("DELETE", f"/v2/<name>/manifests/{sha256(d.manifests[3])}")
        assert deleted.status == 202, deleted
        assert r.request("GET", f"/v2/<name>/manifests/{sha256(d.manifests[3])}").status == 404
        tags = r.request("GET", "/v2/<name>/tags/list")
        assert tags.status == 200 and len(tags.json()["tags"]) < count, tags
        referenced = self.still_referenced()
        config = r.request("DELETE", f"/v2/<name>/blobs/{sha256(d.configs[3])}")
        assert config.status == 202, config  # no manifest uses it any more
        layer = r.request("DELETE", f"/v2/<name>/blobs/{sha256(d.layer)}")
        expected = 405 if sha256(d.layer) in referenced else 202
        assert layer.status == expected, (layer, referenced)
        assert r.request("GET", f"/v2/<name>/blobs/{sha256(d.configs[3])}").status == 404


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "s3", "s3-redirect"])
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[bool, RegistryProcess]]:
    """One registry per OCI_AUTOMATIC_CROSSMOUNT setting, per metadata backend (the embedded SQLite, or
    PostgreSQL: a real server, tests/helpers/pgfixture.py, a fresh database per registry), and with SQLite
    and blobs in S3 (a real Ceph RGW, a prefix per registry): streamed through the registry, or (s3-redirect)
    each blob GET a 307 to a presigned URL that the client follows to the gateway."""
    configs = ["", ""]
    with contextlib.ExitStack() as databases:
        if request.param == "postgresql":
            postgres = request.getfixturevalue("postgres_server")
            urls = [databases.enter_context(scratch_database(postgres.url, drop=False)) for _ in "ab"]
            configs = [f'metadata = "{url}"\n' for url in urls]
        if request.param.startswith("s3"):  # blobs in a real Ceph RGW (tests/helpers/ceph.py)
            rgw = request.getfixturevalue("ceph_rgw")
            scope = tmp_path_factory.mktemp("conformance-s3")
            redirect = request.param == "s3-redirect"
            configs = [f'blobs = "{s3_url(rgw, scope / name, redirect=redirect)}"\n' for name in "ab"]
        yield from _servers(tmp_path_factory, configs)


def _servers(tmp_path_factory: pytest.TempPathFactory, configs: list[str]) -> Iterator[dict[bool, RegistryProcess]]:
    on = start_lamina(tmp_path_factory.mktemp("conformance-auto"), config=configs[0] or None)
    try:
        off = start_lamina(tmp_path_factory.mktemp("conformance-manual"),
                           config=configs[1] + "automatic_crossmount = false\n")
        try:
            yield {True: on, False: off}
        finally:
            off.stop()
    finally:
        on.stop()


@pytest.mark.parametrize("delete_manifest_before_blobs", [True, False], ids=["manifests-first", "blobs-first"])
@pytest.mark.parametrize("automatic_crossmount", [True, False], ids=["crossmount-on", "crossmount-off"])
def test_conformance_workflows(
    servers: dict[bool, RegistryProcess], automatic_crossmount: bool, delete_manifest_before_blobs: bool,
    request: pytest.FixtureRequest,
) -> None:
    server = servers[automatic_crossmount]
    suffix = uuid.uuid4().hex[:8]
    registry = Registry("127.0.0.1", server.port, f"conformance/{suffix}")
    run = Run(registry, SuiteData(), f"crossmount/{suffix}", automatic_crossmount, delete_manifest_before_blobs)
    run.pull()
    run.push()
    run.discovery()
    run.management()
    # blob GETs went to the gateway by presigned redirect exactly when the registry was set to redirect
    assert (registry.redirects > 0) == (request.node.callspec.params["servers"] == "s3-redirect")


def test_invalid_manifest_references_name_no_manifest(servers: dict[bool, RegistryProcess]) -> None:
    """The three failures the suite reported (pull: GET and HEAD, push: GET of ``.INVALID_MANIFEST_NAME``),
    DELETE alike; a PUT to an invalid tag stays TAG_INVALID 400 and a malformed digest DIGEST_INVALID 400."""
    registry = Registry("127.0.0.1", servers[True].port, "conformance/invalid")
    for method in ("GET", "HEAD", "DELETE"):
        for reference in (NONEXISTENT_MANIFEST, "-dash", "t" * 129):
            response = registry.request(method, f"/v2/<name>/manifests/{reference}")
            assert response.status == 404, (method, reference, response)
            if method != "HEAD":
                assert response.error_code() == "MANIFEST_UNKNOWN"
                assert reference in response.json()["errors"][0]["message"]
    put = registry.request("PUT", f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}", b"{}", {"Content-Type": OCI_MANIFEST})
    assert put.status == 400 and put.error_code() == "TAG_INVALID", put
    digest = registry.request("GET", "/v2/<name>/manifests/sha256:nothex")
    assert digest.status == 400 and digest.error_code() == "DIGEST_INVALID", digest

"""The error enum against the spec's table, the one middleware's rendering (GET and HEAD), and the
rule that an unexpected failure is a logged 500 in the spec's format, never a traceback on the wire."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from regtools import error_code

from lamina.registry.app import create_app
from lamina.registry.config import RegistryConfig
from lamina.registry.errors import ErrorCode, RegistryError

SPEC_TABLE = {  # distribution-spec "Error Codes" with the statuses CNCF distribution answers
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 415,
    "TOOMANYREQUESTS": 429,
    "RANGE_INVALID": 416,
}


def test_every_spec_code_has_its_status() -> None:
    for name, status in SPEC_TABLE.items():
        assert ErrorCode[name].status == status, name
        assert ErrorCode[name].message


def test_status_override_and_default_message() -> None:
    error = RegistryError(ErrorCode.UNSUPPORTED, status=405)
    assert error.status == 405 and error.message == ErrorCode.UNSUPPORTED.message


@pytest.fixture
async def failing_client(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = dataclasses.replace(RegistryConfig(root=tmp_path / "root"), run_janitor=False)
    app = create_app(config)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("disk on fire")

    async def denied(request: web.Request) -> web.Response:
        raise RegistryError(ErrorCode.DENIED, "no pushing here", detail={"why": "test"})

    app.router.add_get("/v2/{name:.+}/boom", boom, allow_head=True)
    app.router.add_get("/v2/{name:.+}/denied", denied, allow_head=True)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def test_unexpected_exception_is_a_logged_500(failing_client, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="lamina.registry"):
        response = await failing_client.get("/v2/app/boom")
    assert response.status == 500
    assert await error_code(response) == "UNKNOWN"
    assert "disk on fire" not in await response.text()
    assert any("disk on fire" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_rendering_with_detail_and_head(failing_client) -> None:  # type: ignore[no-untyped-def]
    response = await failing_client.get("/v2/app/denied")
    assert response.status == 403
    assert response.headers["Content-Type"].startswith("application/json")
    assert await response.json() == {
        "errors": [{"code": "DENIED", "message": "no pushing here", "detail": {"why": "test"}}]
    }
    head = await failing_client.head("/v2/app/denied")
    assert head.status == 403 and await head.read() == b""
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_name_is_checked_before_the_handler(failing_client) -> None:  # type: ignore[no-untyped-def]
    response = await failing_client.get("/v2/Not_Valid/boom")
    assert response.status == 400 and await error_code(response) == "NAME_INVALID"

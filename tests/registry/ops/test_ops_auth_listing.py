"""The catalog names only what the caller may pull: filtered before paging (so ``n``/``last`` pages and
the ``Link`` header never name a hidden repository), and through the token flow it lists what the
token's subject's rules allow (a ``registry:catalog:*`` token used to list nothing)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt
import pytest
from opstools import Authed, OpsClient, bearer, ops_from_toml
from regtools import push_blob

from lamina.oci import parse_digest
from lamina.registry.auth import AuthService
from lamina.registry.auth.middleware import Visibility
from lamina.registry.auth.service import Identity
from lamina.registry.routes import catalog
from lamina.store import open_storage

CAROL = {"Authorization": "Basic Y2Fyb2w6Y2Fyb2wtcHc="}  # carol:carol-pw
DAVE = ("dave", "dave-pw")

PUBLIC = ["public/a", "public/b", "public/c"]
SECRET = ["a-secret/x", "public-not/y", "secret/payroll", "secret/plans", "zz/hidden"]
DAVES = [f"team/d{i}" for i in range(8)]


def _config(tmp_path: Path) -> str:
    path = tmp_path / "htpasswd"
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
             for user, pw in (("carol", "carol-pw"), DAVE, ("root", "root-pw"))]
    path.write_text("\n".join(lines) + "\n")
    return f"""
[auth]
htpasswd = "{path}"

[[auth.rules]]
repositories = ["public/**"]
users = ["carol"]
actions = ["pull"]

[[auth.rules]]
repositories = ["team/*"]
users = ["dave"]
actions = ["pull"]

[[auth.rules]]
repositories = ["**"]
users = ["root"]
actions = ["pull", "push", "delete"]
"""


@pytest.fixture
async def client(make_ops_client: OpsClient, tmp_path: Path):  # type: ignore[no-untyped-def]
    client = await make_ops_client(_config(tmp_path))
    root = Authed(client, {"Authorization": "Basic cm9vdDpyb290LXB3"})  # root:root-pw
    for name in PUBLIC + SECRET + DAVES:
        await push_blob(root, name, f"blob of {name}".encode())
    return client


async def _walk(client, headers: dict[str, str], n: int) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Every name and every Link ``last`` met while following the catalog's pages of ``n``."""
    names: list[str] = []
    lasts: list[str] = []
    url = f"/v2/_catalog?n={n}"
    for _ in range(50):
        response = await client.get(url, headers=headers)
        assert response.status == 200, await response.text()
        page = (await response.json())["repositories"]
        assert len(page) <= n
        names += page
        link = response.headers.get("Link")
        if link is None:
            return names, lasts
        url = re.fullmatch(r"<([^>]+)>; rel=\"next\"", link).group(1)  # type: ignore[union-attr]
        lasts.append(parse_qs(urlsplit(url).query)["last"][0])
    raise AssertionError("the catalog's links never ended")


@pytest.mark.parametrize("n", [1, 2, 3])
async def test_catalog_pages_and_links_never_name_what_carol_may_not_pull(client, n: int) -> None:  # type: ignore[no-untyped-def]
    names, lasts = await _walk(client, CAROL, n)
    assert names == PUBLIC
    assert set(lasts) <= set(PUBLIC)
    # full pages: a page of n holds n visible names (filtered before paging, not after)
    response = await client.get("/v2/_catalog?n=1", headers=CAROL)
    assert (await response.json())["repositories"] == ["public/a"]
    assert "last=public%2Fa" in response.headers["Link"]
    # after the last visible name only hidden ones follow: an empty page, no Link
    response = await client.get("/v2/_catalog?n=10&last=public/c", headers=CAROL)
    assert (await response.json())["repositories"] == [] and "Link" not in response.headers


async def test_catalog_without_n_lists_exactly_the_pullable_names(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/v2/_catalog", headers=CAROL)
    assert (await response.json())["repositories"] == PUBLIC
    everything, _ = await _walk(client, {"Authorization": "Basic cm9vdDpyb290LXB3"}, 4)
    assert everything == sorted(PUBLIC + SECRET + DAVES)


async def _catalog_token(client, user: tuple[str, str], *scopes: str) -> str:  # type: ignore[no-untyped-def]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}
    params = [("service", "lamina-registry")] + [("scope", s) for s in scopes]
    response = await client.get("/token", params=params, headers=basic)
    assert response.status == 200, await response.text()
    return str((await response.json())["token"])


async def test_token_flow_catalog_lists_what_the_subjects_rules_allow(client) -> None:  # type: ignore[no-untyped-def]
    token = await _catalog_token(client, DAVE, "registry:catalog:*")
    response = await client.get("/v2/_catalog", headers=bearer(token))
    assert response.status == 200
    assert (await response.json())["repositories"] == DAVES  # all 8, not []
    names, lasts = await _walk(client, bearer(token), 3)
    assert names == DAVES and set(lasts) <= set(DAVES)
    # without the catalog scope the token lists nothing: 401 with the challenge naming the scope
    token = await _catalog_token(client, DAVE, "repository:team/d0:pull")
    response = await client.get("/v2/_catalog", headers=bearer(token))
    assert response.status == 401 and 'scope="registry:catalog:*"' in response.headers["WWW-Authenticate"]


def test_visible_page_walks_batches_until_the_page_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many hidden names before the visible ones: the filter reads batch after batch, never stops short."""
    store = open_storage(tmp_path / "root")
    try:
        hidden = [f"hidden/{i:03d}" for i in range(40)]
        shown = ["public/x", "public/y", "public/z"]
        data = b"one blob linked into every repository"
        digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
        store.blobs.put(digest, data)
        for name in hidden + shown:
            store.metadata.link_blob(name, digest, len(data))
        monkeypatch.setattr(catalog, "_BATCH", 7)

        def visible(name: str) -> bool:
            return name.startswith("public/")

        assert catalog.visible_page(store, None, 2, visible) == shown[:2]
        assert catalog.visible_page(store, "public/x", None, visible) == shown[1:]
        assert catalog.visible_page(store, None, None, visible) == shown
        assert catalog.visible_page(store, None, 5, None) == hidden[:5]
    finally:
        store.close()


def test_visibility_of_a_token_is_its_grants_plus_its_subjects_rules(tmp_path: Path) -> None:
    config = ops_from_toml(_config(tmp_path)).auth
    assert config is not None
    service = AuthService(config, tmp_path / "root", failures=lambda: pytest.fail("no login is checked here"))
    catalog_token = Identity("carol", "bearer", {("registry", "catalog"): frozenset({"*"})})
    assert Visibility(service, catalog_token)("public/a") and not Visibility(service, catalog_token)("secret/x")
    no_catalog = Identity("carol", "bearer", {("repository", "secret/x"): frozenset({"pull"})})
    assert Visibility(service, no_catalog)("secret/x") and not Visibility(service, no_catalog)("public/a")

"""The web console in a real browser: headless Chromium loads /ui/ pages from the running app; the tests
read the rendered DOM (--dump-dom) for the key elements and check a screenshot's pixels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chromium import dump_dom, pixel, read_png, screenshot
from opstools import OpsClient
from regtools import descriptor, push_blob, push_image

from helpers.buildkit_cache import buildkit_cache
from lamina.oci import mediatypes as mt
from lamina.registry.console.pages import e


async def _populate(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An image (with a referrer), a two-platform index and a BuildKit cache in apps/web; one image elsewhere."""
    _, image = await push_image(client, "apps/web", "v1", layers=[b"web layer" * 100])
    children = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        body, _ = await push_image(client, "apps/web", None, layers=[arch.encode() * 50], config=config)
        children.append({**descriptor(body, mt.OCI_MANIFEST), "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": children}).encode()
    response = await client.put("/v2/apps/web/manifests/multi", data=index, headers={"Content-Type": mt.OCI_INDEX})
    assert response.status == 201
    cache = buildkit_cache()
    for blob in cache.blobs():
        await push_blob(client, "apps/web", blob.data)
    response = await client.put("/v2/apps/web/manifests/buildcache", data=cache.image_manifest.data,
                                headers={"Content-Type": mt.OCI_MANIFEST})
    assert response.status == 201, await response.text()
    image_body = (await (await client.get("/v2/apps/web/manifests/v1")).read())
    _, sbom = await push_image(
        client, "apps/web", None, config=b"{}", config_type="application/vnd.oci.empty.v1+json",
        layers=[b'{"sbom": true}'], layer_type="application/spdx+json", artifactType="application/spdx+json",
        subject=descriptor(image_body, mt.OCI_MANIFEST),
    )
    await push_image(client, "team/other", "latest", layers=[b"other"])
    return {"image": image, "sbom": sbom, "cache": response.headers["Docker-Content-Digest"]}


def _rows(dom: str, table_id: str) -> list[str]:
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', dom, re.S)
    assert match is not None, f"no table#{table_id} in the page"
    return re.findall(r"<tr>(.*?)</tr>", match.group(1).split("</thead>", 1)[1], re.S)


async def test_console_pages_show_repositories_manifests_and_details(make_ops_client: OpsClient,
                                                                   tmp_path: Path) -> None:
    client = await make_ops_client()
    digests = await _populate(client)
    profile = tmp_path / "profile"
    dom = await dump_dom(profile, str(client.make_url("/ui/")))
    rows = _rows(dom, "repositories")
    assert len(rows) == 2 and 'href="/ui/r/apps/web"' in rows[0] and "team/other" in rows[1]
    assert re.search(r"<td>6</td><td>3</td><td>\d+\.\d KiB</td><td>20\d\d-", rows[0]), rows[0]

    dom = await dump_dom(profile, str(client.make_url("/ui/r/apps/web")))
    rows = _rows(dom, "manifests")
    assert len(rows) == 6
    text = {re.sub(r"<[^>]+>", " ", row) for row in rows}
    kinds = sorted(re.search(r"(Image index|Image|Build cache|Other artifact)", t).group(1) for t in text)
    assert kinds == ["Build cache", "Image", "Image", "Image", "Image index", "Other artifact"]
    multi = next(t for t in text if "multi" in t)
    assert "linux/amd64, linux/arm64" in multi and "Image index" in multi
    v1 = next(t for t in text if " v1 " in t)
    assert "linux/amd64" in v1 and "never" not in v1  # _populate pulled it through the API
    assert "never" in multi  # the console's own reads are not pulls
    assert sum("untagged" in t for t in text) == 3

    dom = await dump_dom(profile, str(client.make_url(f"/ui/r/apps/web/m/{digests['cache']}")))
    cache = buildkit_cache()
    from lamina.oci import CacheConfig

    parsed = CacheConfig.parse(cache.cacheconfig.data)
    assert re.search(r'id="kind">Build cache<', dom)
    assert f'id="cache-records">{len(parsed.records)}<' in dom
    assert f'id="cache-layers">{len(parsed.layers)}<' in dom
    assert len(_rows(dom, "layers")) == len(cache.layers)
    assert mt.BUILDKIT_CACHE_CONFIG in _rows(dom, "config")[0]

    dom = await dump_dom(profile, str(client.make_url(f"/ui/r/apps/web/m/{digests['image']}")))
    referrers = _rows(dom, "referrers")
    assert len(referrers) == 1 and "application/spdx+json" in referrers[0] and digests["sbom"] in referrers[0]

    dom = await dump_dom(profile, str(client.make_url("/ui/r/no/such")))
    assert 'id="error">no repository no/such<' in dom


async def test_console_screenshot_renders_the_styled_page(make_ops_client: OpsClient, tmp_path: Path) -> None:
    client = await make_ops_client()
    await push_image(client, "apps/web", "v1")
    shot = await screenshot(tmp_path / "profile", str(client.make_url("/ui/")), tmp_path / "repos.png")
    width, height, rows = read_png(shot, max_rows=120)
    assert (width, height) == (1280, 900)
    assert pixel(rows, 5, 5) == (0x1D, 0x23, 0x30)  # the header bar
    # the table header row (#eef0f4) and dark text somewhere below the header
    band = {pixel(rows, x, y) for y in range(50, 120) for x in range(0, 600, 3)}
    assert (0xEE, 0xF0, 0xF4) in band
    assert any(max(p) < 90 for p in band)


async def test_console_is_behind_auth_and_shows_only_pullable_repositories(make_ops_client: OpsClient,
                                                                          htpasswd: Path, tmp_path: Path) -> None:
    client = await make_ops_client(f"""
[auth]
htpasswd = "{htpasswd}"
[[auth.rules]]
repositories = ["**"]
users = ["root"]
actions = ["pull", "push"]
[[auth.rules]]
repositories = ["apps/*"]
users = ["alice"]
actions = ["pull"]
""")
    from opstools import Authed, basic

    root = Authed(client, basic("root"))
    await push_image(root, "apps/web", "v1")
    await push_image(root, "secret/thing", "v1")
    anonymous = await client.get("/ui/")  # a browser would show its sign-in prompt here
    assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    text = await anonymous.text()
    assert 'id="error">sign in' in text and "apps/web" not in text
    url = client.make_url("/ui/").with_user("alice").with_password("alice-pw")
    dom = await dump_dom(tmp_path / "profile2", str(url))
    rows = _rows(dom, "repositories")
    assert len(rows) == 1 and "apps/web" in rows[0] and "secret" not in dom
    response = await client.get("/ui/r/secret/thing", headers=basic("alice"))
    assert response.status == 404
    response = await client.get("/ui/", headers=basic("alice", "wrong"))
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Basic ")


def test_every_client_value_is_escaped() -> None:
    assert e('<script>alert("x")</script>') == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    from lamina.registry.console.pages import _tags

    assert "<b>" not in _tags(["<b>"])

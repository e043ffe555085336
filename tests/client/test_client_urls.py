"""``lamina.client.urls.URL``: what the registry client asks of a URL, checked against RFC 3986's examples
and the shapes registries send (upload ``Location`` with an opaque query, ``Link`` pagination)."""

from __future__ import annotations

import pytest

from lamina.client.urls import URL


def test_parts_ports_and_request_target() -> None:
    url = URL("http://127.0.0.1:5000/v2/team/app/manifests/latest")
    assert (url.scheme, url.raw_host, url.explicit_port, url.port) == ("http", "127.0.0.1", 5000, 5000)
    assert url.raw_path_qs == "/v2/team/app/manifests/latest" and url.is_absolute()
    assert URL("https://Registry.Example.com").port == 443 and URL("https://registry.example.com").explicit_port is None
    assert URL("https://registry.example.com").raw_path_qs == "/"
    assert URL("http://[::1]:5000/v2/").raw_host == "::1"
    assert not URL("/v2/").is_absolute()
    with pytest.raises(ValueError, match="invalid port"):
        _ = URL("http://host:99999/").port


@pytest.mark.parametrize(("reference", "expected"), [  # RFC 3986 section 5.4.1, base http://a/b/c/d;p?q
    ("g", "http://a/b/c/g"), ("/g", "http://a/g"), ("//g", "http://g"), ("?y", "http://a/b/c/d;p?y"),
    ("../g", "http://a/b/g"), ("g?y#s", "http://a/b/c/g?y#s"), ("https://other/x", "https://other/x"),
])
def test_join_resolves_as_rfc_3986(reference: str, expected: str) -> None:
    assert str(URL("http://a/b/c/d;p?q").join(URL(reference, encoded=True))) == expected


def test_location_query_is_kept_byte_for_byte_and_params_are_appended() -> None:
    base = URL("http://127.0.0.1:5000/v2/team/app/blobs/uploads/")
    location = base.join(URL("/v2/team/app/blobs/uploads/abc?_state=a%2Bb%3D%3D&x=1", encoded=True))
    assert location.raw_path_qs == "/v2/team/app/blobs/uploads/abc?_state=a%2Bb%3D%3D&x=1"
    done = location.extend_query({"digest": "sha256:0123"})
    assert done.raw_path_qs.endswith("?_state=a%2Bb%3D%3D&x=1&digest=sha256:0123")
    mount = URL("http://h/v2/a/blobs/uploads/").extend_query({"mount": "sha256:ff", "from": "team/base img"})
    assert mount.query_string == "mount=sha256:ff&from=team/base%20img"
    token = URL("https://auth.example.com/token").extend_query([("scope", "repository:a:pull"), ("scope", "b&c=d")])
    assert token.query_string == "scope=repository:a:pull&scope=b%26c%3Dd"
    assert URL("http://h/p").extend_query({}) == URL("http://h/p")
    assert URL("http://h/a b").raw_path_qs == "/a%20b" and str(URL("http://h/a%20b", encoded=True)) == "http://h/a%20b"

"""HTML for the web console: plain functions from data to escaped markup (no template engine).

Every value that came from a client (repository names, tags, annotations, media types) goes through
:func:`e` (``html.escape``); nothing else builds markup. Element ids and classes are stable because the
browser tests look for them.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from lamina.store.views import ManifestInfo, RepositoryInfo

__all__ = ["KIND_LABELS", "Detail", "detail_page", "human_bytes", "repositories_page", "repository_page"]

KIND_LABELS = {"image": "Image", "index": "Image index", "cache": "Build cache", "artifact": "Other artifact"}

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px}h1{font-size:1.3em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6eb;font-size:.92em}
th{background:#eef0f4}code{font-size:.9em}.tag{background:#dfe9ff;border-radius:3px;padding:1px 5px;margin-right:3px}
.kind{font-weight:600}.muted{color:#7a8294}dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px}
dt{font-weight:600}
"""


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def when(stamp: float | None) -> str:
    if stamp is None:
        return '<span class="muted">never</span>'
    return e(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp)))


def _page(title: str, body: str, user: str | None) -> str:
    who = f'<span style="float:right">{e(user)}</span>' if user else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} - lamina registry</title>'
        f"<style>{CSS}</style></head><body><header><a href=\"/ui/\">lamina registry</a>{who}</header>"
        f"<main>{body}</main></body></html>"
    )


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def repo_url(name: str) -> str:
    return f"/ui/r/{quote(name)}"


def repositories_page(repos: Sequence[RepositoryInfo], user: str | None) -> str:
    rows = [
        (
            f'<a class="repo" href="{e(repo_url(r.name))}">{e(r.name)}</a>',
            str(r.manifests),
            str(r.tags),
            e(human_bytes(r.bytes)),
            when(r.last_push),
        )
        for r in repos
    ]
    table = _table("repositories", ("Repository", "Manifests", "Tags", "Size", "Last push"), rows)
    empty = '<p class="muted">No repositories yet.</p>' if not repos else ""
    return _page("Repositories", f"<h1>Repositories</h1>{table}{empty}", user)


def _tags(tags: Sequence[str]) -> str:
    return "".join(f'<span class="tag">{e(t)}</span>' for t in tags) or '<span class="muted">untagged</span>'


def repository_page(name: str, manifests: Sequence[ManifestInfo], platforms: dict[str, str],
                    user: str | None) -> str:
    rows = [
        (
            f'<a class="manifest" href="{e(repo_url(name))}/m/{e(m.digest)}"><code>{e(m.digest[:19])}</code></a>',
            _tags(m.tags),
            f'<span class="kind">{e(KIND_LABELS.get(m.kind, m.kind))}</span>',
            e(human_bytes(m.size + sum(r.size for r in m.references))),
            when(m.pushed_at),
            when(m.last_pulled_at),
            e(platforms.get(m.digest, "")),
        )
        for m in manifests
    ]
    table = _table("manifests", ("Digest", "Tags", "Kind", "Size", "Pushed", "Last pulled", "Platforms"), rows)
    return _page(name, f'<h1 id="repository">{e(name)}</h1>{table}', user)


@dataclass(frozen=True, slots=True)
class Detail:
    info: ManifestInfo
    config: tuple[str, str, int] | None  # (media type, digest, size)
    layers: Sequence[tuple[str, str, int]]
    children: Sequence[tuple[str, str, int, str]]  # (media type, digest, size, platform)
    referrers: Sequence[tuple[str, str, int]]  # (artifact type, digest, size)
    cache_records: int | None = None
    cache_layers: int | None = None


def detail_page(name: str, detail: Detail, user: str | None) -> str:
    m = detail.info
    facts = [
        ("Repository", f'<a href="{e(repo_url(name))}">{e(name)}</a>'),
        ("Digest", f"<code>{e(m.digest)}</code>"),
        ("Kind", f'<span class="kind" id="kind">{e(KIND_LABELS.get(m.kind, m.kind))}</span>'),
        ("Media type", e(m.media_type)),
        ("Tags", _tags(m.tags)),
        ("Pushed", when(m.pushed_at)),
        ("Last pulled", when(m.last_pulled_at)),
    ]
    if m.artifact_type:
        facts.append(("Artifact type", e(m.artifact_type)))
    if m.subject:
        facts.append(("Subject", f'<a href="{e(repo_url(name))}/m/{e(m.subject)}"><code>{e(m.subject)}</code></a>'))
    if detail.cache_records is not None:
        facts.append(("Cache records", f'<span id="cache-records">{detail.cache_records}</span>'))
        facts.append(("Cache layers", f'<span id="cache-layers">{detail.cache_layers}</span>'))
    parts = [f"<h1>{e(name)}@{e(m.digest[:19])}</h1>",
             "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"]
    if detail.config is not None:
        media, digest, size = detail.config
        parts.append("<h2>Config</h2>" + _table("config", ("Media type", "Digest", "Size"),
                                                [(e(media), f"<code>{e(digest)}</code>", e(human_bytes(size)))]))
    if detail.layers:
        parts.append("<h2>Layers</h2>" + _table(
            "layers", ("#", "Media type", "Digest", "Size"),
            [(str(i), e(mt), f"<code>{e(d)}</code>", e(human_bytes(s))) for i, (mt, d, s) in enumerate(detail.layers)],
        ))
    if detail.children:
        parts.append("<h2>Manifests</h2>" + _table(
            "children", ("Platform", "Media type", "Digest", "Size"),
            [(e(p), e(mt), f'<a href="{e(repo_url(name))}/m/{e(d)}"><code>{e(d)}</code></a>', e(human_bytes(s)))
             for mt, d, s, p in detail.children],
        ))
    parts.append("<h2>Referrers</h2>" + _table(
        "referrers", ("Artifact type", "Digest", "Size"),
        [(e(t), f'<a href="{e(repo_url(name))}/m/{e(d)}"><code>{e(d)}</code></a>', e(human_bytes(s)))
         for t, d, s in detail.referrers],
    ))
    return _page(f"{name}@{m.digest[:19]}", "".join(parts), user)


def error_page(status: int, message: str, user: str | None) -> str:
    return _page(str(status), f'<h1>{status}</h1><p id="error">{e(message)}</p>', user)

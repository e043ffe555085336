"""``--cache-to`` merge and retention options: merge=true|false, max-size=SIZE, max-age=DURATION."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lamina.build.cacheopts import CacheOptionError, parse_cache_to, parse_duration, parse_size


def test_defaults_merge_without_retention() -> None:
    spec = parse_cache_to("type=registry,ref=reg.example/app:cache,mode=max")
    assert (spec.merge, spec.max_size, spec.max_age) == (True, None, None)
    assert parse_cache_to("reg.example/app:cache").merge is True


def test_values_parse() -> None:
    spec = parse_cache_to("type=registry,ref=r.example/a:c,merge=false,max-size=2GiB,max-age=7d")
    assert (spec.merge, spec.max_size, spec.max_age) == (False, 2 << 30, timedelta(days=7))
    local = parse_cache_to("type=local,dest=/tmp/c,max-size=500MB,max-age=1h30m")
    assert (local.merge, local.max_size, local.max_age) == (True, 500_000_000, timedelta(minutes=90))


@pytest.mark.parametrize(("text", "size"), [("1048576", 1 << 20), ("500MB", 500_000_000), ("2GiB", 2 << 30),
                                            ("1.5kB", 1500), ("40KiB", 40 << 10), ("10b", 10)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("72h", 72 * 3600), ("7d", 7 * 86400), ("1h30m", 5400),
                                               ("2w", 14 * 86400), ("90s", 90)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("max-size=5XB", "max-size must be a positive size like 500MB, 2GiB or 1048576, got '5XB'"),
        ("max-size=0", "max-size must be a positive size like 500MB, 2GiB or 1048576, got '0'"),
        ("max-age=soon", "max-age must be a positive duration like 72h, 7d or 1h30m, got 'soon'"),
        ("max-age=0h", "max-age must be a positive duration like 72h, 7d or 1h30m, got '0h'"),
        ("max-age=-1h", "got '-1h'"),
        ("merge=maybe", "merge must be true or false, got 'maybe'"),
    ],
)
def test_bad_values_are_one_line_quoting_them(value: str, message: str) -> None:
    text = f"type=registry,ref=r.example/a:c,{value}"
    with pytest.raises(CacheOptionError) as err:
        parse_cache_to(text)
    assert message in str(err.value) and repr(text) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("option", ["merge=false", "max-size=1MB", "max-age=1h"])
def test_inline_refuses_them(option: str) -> None:
    with pytest.raises(CacheOptionError, match=f"{option.split('=')[0]} applies to type=registry and type=local"):
        parse_cache_to(f"type=inline,{option}")

"""Cache keys are pure functions of a step's inputs: stable, sensitive to every input, blind to the rest."""

from __future__ import annotations

from dataclasses import replace

from lamina.build import cachekey
from lamina.build.ops import CopyStep, MetaStep, RunStep, WorkdirStep
from lamina.oci import Platform, digest_of

AMD64 = Platform("amd64", "linux")
BASE = cachekey.key_of(cachekey.image_inputs(digest_of(b"manifest"), AMD64))
RUN = RunStep(argv=("/bin/sh", "-c", "make"), env=("PATH=/bin", "A=1"), user="", workdir="/src", line=3,
              created_by="RUN make")


def test_encoding_is_canonical_sorted_compact_json() -> None:
    inputs = cachekey.run_inputs(RUN, BASE)
    encoded = cachekey.encode(inputs)
    assert encoded.startswith(b'{"argv":["/bin/sh","-c","make"],"env":["PATH=/bin","A=1"],"inline_files":[],"network"')
    assert b" " not in encoded.replace(b"/bin/sh", b"")
    assert cachekey.key_of(inputs) == digest_of(encoded)


def test_key_ignores_line_and_history_text() -> None:
    moved = replace(RUN, line=99, created_by="RUN   make")
    assert cachekey.key_of(cachekey.run_inputs(RUN, BASE)) == cachekey.key_of(cachekey.run_inputs(moved, BASE))


def test_every_run_input_changes_the_key() -> None:
    key = cachekey.key_of(cachekey.run_inputs(RUN, BASE))
    variants = [
        replace(RUN, argv=("/bin/sh", "-c", "make all")),
        replace(RUN, env=("PATH=/bin", "A=2")),
        replace(RUN, user="app"),
        replace(RUN, workdir="/"),
        replace(RUN, network="none"),
        replace(RUN, network="host"),
        replace(RUN, security="insecure"),
    ]
    keys = {cachekey.key_of(cachekey.run_inputs(v, BASE)) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    other_parent = cachekey.key_of(cachekey.image_inputs(digest_of(b"other"), AMD64))
    assert cachekey.key_of(cachekey.run_inputs(RUN, other_parent)) != key


def test_base_key_includes_platform() -> None:
    arm = Platform("arm64", "linux")
    assert cachekey.key_of(cachekey.image_inputs(digest_of(b"m"), arm)) != cachekey.key_of(
        cachekey.image_inputs(digest_of(b"m"), AMD64)
    )


def test_copy_key_depends_on_content_and_source() -> None:
    step = CopyStep(sources=("app",), dest="/app/", line=4, created_by="COPY app /app/")
    a = cachekey.key_of(cachekey.copy_inputs(step, BASE, content="sha256:aa"))
    b = cachekey.key_of(cachekey.copy_inputs(step, BASE, content="sha256:bb"))
    c = cachekey.key_of(cachekey.copy_inputs(replace(step, chmod="755"), BASE, content="sha256:aa"))
    d = cachekey.key_of(cachekey.copy_inputs(step, BASE, content=None, source_stage=BASE))
    assert len({a, b, c, d}) == 4


def test_meta_step_keeps_the_parent_key() -> None:
    assert cachekey.step_inputs(MetaStep(line=1, created_by="ENV A=1"), BASE) is None
    assert cachekey.step_inputs(WorkdirStep(path="/app"), BASE) == cachekey.workdir_inputs(WorkdirStep("/app"), BASE)


def test_describe_difference_names_the_first_changed_input() -> None:
    old = cachekey.run_inputs(RUN, BASE)
    assert cachekey.describe_difference(old, cachekey.run_inputs(replace(RUN, env=("PATH=/bin", "A=2")), BASE)) == (
        "env/arg A changed"
    )
    assert cachekey.describe_difference(old, cachekey.run_inputs(replace(RUN, argv=("x",)), BASE)) == "argv changed"
    step = CopyStep(sources=("a",), dest="/a")
    assert (
        cachekey.describe_difference(
            cachekey.copy_inputs(step, BASE, content="sha256:1"), cachekey.copy_inputs(step, BASE, content="sha256:2")
        )
        == "copied files changed in the context"
    )
    old_base = cachekey.image_inputs(digest_of(b"1"), AMD64)
    assert cachekey.describe_difference(old_base, cachekey.image_inputs(digest_of(b"2"), AMD64)).startswith(
        "base image digest changed"
    )


def test_proxy_env_is_not_in_the_key_but_inline_files_are() -> None:
    key = cachekey.key_of(cachekey.run_inputs(RUN, BASE))
    assert cachekey.key_of(cachekey.run_inputs(replace(RUN, proxy_env=("HTTP_PROXY=http://p:3128",)), BASE)) == key
    assert cachekey.key_of(cachekey.run_inputs(replace(RUN, inline_files=(("/dev/pipes/EOF", "x"),)), BASE)) != key


def test_ordinary_run_keys_are_unchanged_by_the_sandbox() -> None:
    """The default modes encode as before the sandbox existed: caches made by earlier versions still hit."""
    inputs = cachekey.run_inputs(RUN, BASE)
    assert inputs["network"] == "default" and "security" not in inputs
    assert cachekey.run_inputs(replace(RUN, security="insecure"), BASE)["security"] == "insecure"


def test_a_network_or_security_change_is_explained_by_name() -> None:
    old = cachekey.run_inputs(replace(RUN, network="none"), BASE)
    assert cachekey.describe_difference(old, cachekey.run_inputs(RUN, BASE)) == "network mode changed (none -> default)"
    insecure = cachekey.run_inputs(replace(RUN, security="insecure"), BASE)
    assert cachekey.describe_difference(insecure, cachekey.run_inputs(RUN, BASE)) == (
        "security mode changed (insecure -> sandbox)"
    )

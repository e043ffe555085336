"""buildx conveniences parsed as buildx parses them: --annotation, --build-context, --no-cache-filter,
--iidfile/--metadata-file contents, docker-archive names; every bad value is one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.build.annotations import AnnotationError, parse_annotations
from lamina.build.buildmeta import check_iidfile, image_metadata, image_names, with_load, write_metadata_file
from lamina.build.dockerarchive import docker_names
from lamina.build.namedcontexts import (
    DirContext,
    ImageContext,
    LayoutContext,
    familiar_name,
    lookup_context,
    parse_build_contexts,
    parse_stage_filter,
)
from lamina.cli import main
from lamina.oci import Platform, digest_of

AMD64 = Platform("amd64", "linux")
ARM64 = Platform("arm64", "linux")


def test_annotation_levels_defaults_and_platforms() -> None:
    ann = parse_annotations([
        "org.example.plain=1",
        "manifest:org.example.m=2",
        "manifest-descriptor:org.example.md=3",
        "index,manifest:org.example.both=4",
        "manifest[linux/arm64]:org.example.arm=5",
        "index-descriptor:org.example.id=6",
        "manifest:org.example.eq=a=b",
    ])
    assert ann.manifest(AMD64) == {"org.example.plain": "1", "org.example.m": "2", "org.example.both": "4",
                                   "org.example.eq": "a=b"}
    assert ann.manifest(Platform("arm64", "linux", "v8"))["org.example.arm"] == "5"  # arm64 is arm64/v8
    assert ann.manifest_descriptor(AMD64) == {"org.example.md": "3"}
    assert ann.index() == {"org.example.both": "4"}
    assert ann.index_descriptor() == {"org.example.id": "6"}
    with pytest.raises(AnnotationError, match="index annotations not supported for single platform export"):
        ann.check_single_platform()
    parse_annotations(["manifest:a=b"]).check_single_platform()


@pytest.mark.parametrize(("value", "match"), [
    ("novalue", "expected \\[TYPE:\\]KEY=VALUE"),
    ("bogus:k=v", "unknown annotation type 'bogus'"),
    ("manifest[linux]:k=v", "invalid platform"),
    ("index[linux/amd64]:k=v", "cannot name a platform"),
    ("manifest:a b=v", "expected \\[TYPE"),
])
def test_annotation_errors_name_the_value(value: str, match: str) -> None:
    with pytest.raises(AnnotationError, match=match) as info:
        parse_annotations([value])
    assert repr(value) in str(info.value)


def test_build_context_forms(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "index.json").write_text("{}")
    digest = "sha256:" + "a" * 64
    contexts = parse_build_contexts([
        f"src={tmp_path / 'src'}",
        "base=docker-image://127.0.0.1:5000/base/busybox:1",
        f"lay=oci-layout://{layout}:v2",
        f"dig=oci-layout://{layout}@{digest}",
        f"plain=oci-layout://{layout}",
        "empty=docker-image://scratch",
    ])
    assert contexts["src"] == DirContext("src", (tmp_path / "src").resolve())
    assert contexts["base"] == ImageContext("base", "127.0.0.1:5000/base/busybox:1")
    assert contexts["lay"] == LayoutContext("lay", layout.resolve(), "v2")
    assert contexts["lay"].ref == f"oci-layout://{layout.resolve()}:v2"
    assert contexts["dig"].ref == f"oci-layout://{layout.resolve()}@{digest}"
    assert contexts["plain"].ref == f"oci-layout://{layout.resolve()}:latest"  # buildx: tag latest by default
    assert contexts["empty"] == ImageContext("empty", "scratch")


@pytest.mark.parametrize(("value", "match"), [
    ("noequals", "expected NAME=DIR"),
    ("x=/does/not/exist", "/does/not/exist is not a directory"),
    ("x=docker-image://UPPER/Case", "docker-image://UPPER/Case"),
    ("x=oci-layout:///nowhere", "is not an OCI image layout"),
    ("x=https://example.com/ctx.git", "unsupported context source 'https'"),
    ("x=target:other", "unsupported context source 'target'"),
])
def test_build_context_errors_name_the_flag(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_build_contexts([value])
    assert value.split("=", 1)[0] in str(info.value) and "--build-context" in str(info.value)


def test_build_context_named_twice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="given twice"):
        parse_build_contexts([f"a={tmp_path}", f"a={tmp_path}"])


def test_lookup_uses_buildkit_familiar_names(tmp_path: Path) -> None:
    assert familiar_name("docker.io/library/alpine:latest") == "alpine"
    assert familiar_name("alpine:3.19") == "alpine:3.19"
    assert familiar_name("ghcr.io/org/app:latest") == "ghcr.io/org/app"
    assert familiar_name("user/app") == "user/app"
    contexts = parse_build_contexts([
        "alpine=docker-image://127.0.0.1:1/a:1", "alpine::linux/arm64=docker-image://127.0.0.1:1/a:arm",
    ])
    assert lookup_context(contexts, "docker.io/library/alpine:latest", AMD64).ref == "127.0.0.1:1/a:1"
    assert lookup_context(contexts, "alpine", ARM64).ref == "127.0.0.1:1/a:arm"
    assert lookup_context(contexts, "alpine:3", AMD64) is None  # another tag is another name


def test_no_cache_filter_values() -> None:
    assert parse_stage_filter(["build,Test", "deps"]) == frozenset({"build", "test", "deps"})
    with pytest.raises(ValueError, match="empty stage name"):
        parse_stage_filter(["build,"])


def test_metadata_keys_for_one_image() -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": str(digest_of(config)), "size": len(config)},
                           "layers": []}).encode()
    meta = image_metadata(manifest=manifest, names=["r/a:1", "r/a:2"], descriptor_annotations={"k": "v"},
                          platform=AMD64, source_date_epoch=0)
    assert meta == {
        "containerimage.config.digest": str(digest_of(config)),
        "containerimage.descriptor": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": str(digest_of(manifest)),
            "size": len(manifest),
            "annotations": {"k": "v", "org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        "containerimage.digest": str(digest_of(manifest)),
        "image.name": "r/a:1,r/a:2",
    }


def test_metadata_of_an_index_has_no_config_digest(tmp_path: Path) -> None:
    index = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    meta = image_metadata(manifest=index, names=[], descriptor_annotations={}, platform=None,
                          source_date_epoch=None)
    assert "containerimage.config.digest" not in meta and "image.name" not in meta
    assert meta["containerimage.digest"] == str(digest_of(index))
    write_metadata_file(tmp_path / "m.json", meta)
    assert json.loads((tmp_path / "m.json").read_text()) == meta
    assert list(tmp_path.iterdir()) == [tmp_path / "m.json"]  # no temp file left beside it


def test_iidfile_refused_without_an_image_and_load_shorthand() -> None:
    with pytest.raises(ValueError, match="local and tar exporters are incompatible with image ID file"):
        check_iidfile(Path("id"), [{"type": "local", "dest": "d"}])
    check_iidfile(Path("id"), [{"type": "local", "dest": "d"}, {"type": "oci", "dest": "o.tar"}])
    check_iidfile(Path("id"), [{"type": "tar", "dest": "-"}], push=True)  # --push: an image, pushed
    check_iidfile(Path("id"), [])
    assert with_load([], True) == ({"type": "docker"},)
    assert with_load([{"type": "docker"}], True) == ({"type": "docker"},)
    assert with_load([], False) == ()
    assert image_names(["a:1"], [{"type": "registry", "name": "b:2,a:1"}]) == ["a:1", "b:2"]


def test_docker_archive_names() -> None:
    assert docker_names("busybox") == ("docker.io/library/busybox:latest", "busybox:latest")
    assert docker_names("127.0.0.1:5000/app:v1") == ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1")
    full, short = docker_names("127.0.0.1:5000/app@sha256:" + "b" * 64)
    assert short is None and full.endswith("@sha256:" + "b" * 64)


def test_cli_flag_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    cases = [
        (["--annotation", "nope:k=v"], "unknown annotation type 'nope'"),
        (["--build-context", "x=/missing/dir"], "--build-context x=/missing/dir: /missing/dir is not a directory"),
        (["--iidfile", str(tmp_path / "id"), "--output", f"type=local,dest={tmp_path / 'out'}"],
         "local and tar exporters are incompatible with image ID file"),
        (["--annotation", "index:k=v"], "index annotations not supported for single platform export"),
    ]
    for extra, message in cases:
        rc = main(["build", "--root", str(tmp_path / "state"), *extra, str(tmp_path)])
        err = capsys.readouterr().err
        assert rc == 1 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("argv", "message"), [
    (["--cgroup-parent", "x"], "--cgroup-parent is not supported by lamina"),
    (["--attest", "type=sbom"], "--attest is not supported by lamina"),
    (["--sbom", "true"], "--sbom=true is not supported by lamina: it writes no SBOM attestation"),
    (["--provenance", "mode=max"], "--provenance=mode=max is not supported by lamina"),
    (["--check"], "--check is not supported by lamina"),
])
def test_unimplemented_buildx_flags_are_refused_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["build", *argv, str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err  # a usage error


def test_no_attestation_is_what_lamina_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--provenance=false / --sbom=false ask for no attestation: accepted (the build then fails on the missing
    Dockerfile, not on the flags)."""
    rc = main(["build", "--provenance=false", "--sbom=0", str(tmp_path)])
    assert rc == 1 and "Dockerfile not found" in capsys.readouterr().err


@pytest.mark.parametrize(("directive", "message"), [
    ("error=true", "error=true cannot be honoured"),
    ("experimental=all", "experimental= cannot be honoured"),
    ("skip=JSONArgsRecommended;error=yes", "error='yes' is not a boolean"),
    ("bogus", "invalid check directive part 'bogus'"),
])
def test_check_directive_refuses_what_needs_build_checks(directive: str, message: str) -> None:
    from lamina.build.dockerfile.checks import check_directive
    from lamina.build.dockerfile.errors import DockerfileError

    with pytest.raises(DockerfileError, match=message):
        check_directive(directive)
    for accepted in ("skip=all;error=true", "skip=StageNameCasing,FromAsCasing", "error=false", "SKIP=all"):
        check_directive(accepted)


def test_image_outputs_must_push_and_may_be_insecure() -> None:
    from lamina.build.exporter import insecure_output_registries, parse_output

    for spec in ("type=image,name=r/a:1", "type=registry,push=false"):
        with pytest.raises(ValueError, match="lamina has no image store to keep an image that is not pushed"):
            parse_output(spec)
    output = parse_output("type=image,name=10.0.0.9:5000/a:1,push=true,registry.insecure=true")
    assert insecure_output_registries([output], []) == {"10.0.0.9:5000"}
    assert insecure_output_registries([parse_output("type=registry,registry.insecure=true")], ["h:1/x:y"]) == {"h:1"}
    assert insecure_output_registries([parse_output("type=registry")], ["h:1/x:y"]) == frozenset()


def test_frontend_applies_named_contexts(tmp_path: Path) -> None:
    """What convert makes of named contexts, before anything is resolved or run."""
    from lamina.build.dockerfile import convert
    from lamina.build.ops import BaseImage, CopyStep, Scratch
    from lamina.oci import ImageConfig

    resolved: list[str] = []

    def resolve(ref: str, platform: Platform) -> ImageConfig:
        resolved.append(ref)
        return ImageConfig.parse(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')

    contexts = parse_build_contexts([f"src={tmp_path}", "base=docker-image://127.0.0.1:1/pinned/base:7",
                                     "tools=docker-image://127.0.0.1:1/tools:1",
                                     "base::linux/arm64=docker-image://127.0.0.1:1/pinned/base:arm"])
    dockerfile = ("FROM example.invalid/x AS src\nRUN exit 1\nFROM example.invalid/t AS tools\nRUN exit 1\n"
                  "FROM base\nCOPY --from=src a /a\nCOPY --from=tools /bin/x /x\nCOPY --from=base /etc /etc\n")
    graph = convert(dockerfile, resolve_base=resolve, named_contexts=contexts, platform=AMD64)
    stages = {stage.index: stage for stage in graph.stages}
    assert sorted(stages) == [1, 2]  # the stage a directory replaced is not built at all
    assert stages[1].base == BaseImage("127.0.0.1:1/tools:1") and stages[1].steps == ()  # its RUN never runs
    assert stages[2].base == BaseImage("127.0.0.1:1/pinned/base:7")
    copies = [step for step in stages[2].steps if isinstance(step, CopyStep)]
    assert (copies[0].from_context, copies[0].from_stage, copies[0].from_image) == ("src", None, None)
    assert copies[1].from_stage == 1
    assert copies[2].from_image == "127.0.0.1:1/pinned/base:7"
    assert "example.invalid/x" not in resolved and "example.invalid/t" not in resolved
    graph = convert(dockerfile, resolve_base=resolve, named_contexts=contexts, platform=ARM64)
    stage = graph.stage(2)  # for arm64, base::linux/arm64 stands in for FROM base and COPY --from=base
    assert stage.base == BaseImage("127.0.0.1:1/pinned/base:arm")
    assert [s.from_image for s in stage.steps if isinstance(s, CopyStep)][-1] == "127.0.0.1:1/pinned/base:arm"
    graph = convert(dockerfile, resolve_base=resolve, named_contexts=contexts, target="src")
    (stage,) = graph.stages  # the directory as an image: scratch plus its files, one COPY layer
    assert stage.base == Scratch() and [(s.from_context, s.sources, s.dest) for s in stage.steps] == [
        ("src", (".",), "/")]
    graph = convert("FROM files\nRUN true\n", resolve_base=resolve, named_contexts=parse_build_contexts(
        [f"files={tmp_path}"]))
    assert [type(s).__name__ for s in graph.stages[0].steps] == ["CopyStep", "RunStep"]


def test_run_extras_parsing() -> None:
    from lamina.build.runextras import parse_add_hosts, parse_shm_size, parse_ulimits

    assert parse_add_hosts(["a:1.2.3.4", "b=[::1],c.d=10.0.0.1"]) == (
        ("a", "1.2.3.4"), ("b", "::1"), ("c.d", "10.0.0.1"))
    assert parse_ulimits(["nofile=1024:2048", "core=0", "NOFILE=512"]) == (
        ("RLIMIT_NOFILE", 512, 512), ("RLIMIT_CORE", 0, 0))
    assert parse_ulimits(["core=-1"]) == (("RLIMIT_CORE", (1 << 64) - 1, (1 << 64) - 1),)
    assert parse_shm_size("128m") == 128 << 20 and parse_shm_size("1g") == 1 << 30 and parse_shm_size("4096") == 4096
    for call, value, message in [
        (parse_add_hosts, ["nohost"], "expected HOST:IP or HOST=IP"),
        (parse_add_hosts, ["a:host-gateway"], "host-gateway is Docker's daemon gateway"),
        (parse_add_hosts, ["a:not-an-ip"], "'not-an-ip' is not an IP address"),
        (parse_ulimits, ["bogus=1"], "expected NAME=SOFT\\[:HARD\\]"),
        (parse_ulimits, ["nofile=10:5"], "soft limit 10 is above the hard limit 5"),
        (parse_ulimits, ["nofile=x"], "'x' is not a number"),
        (parse_ulimits, ["nofile=999999999999"], "above this process's own hard limit"),
    ]:
        with pytest.raises(ValueError, match=message):
            call(value)
    with pytest.raises(ValueError, match="expected a size such as 64m"):
        parse_shm_size("lots")

"""The COPY/ADD flags as the Dockerfile frontend turns them into steps: which ``--link`` BuildKit merges,
``--parents`` and symbolic ``--chmod`` accepted, the history text BuildKit writes, ADD of git repositories
and the one-line errors for flag combinations lamina refuses."""

from __future__ import annotations

import pytest

from lamina.build.dockerfile import DockerfileError, convert
from lamina.build.ops import CopyStep
from lamina.oci import ContainerConfig, ImageConfig, Platform


def _resolve(_ref: str, _platform: Platform) -> ImageConfig:
    return ImageConfig(config=ContainerConfig({"Env": ["PATH=/usr/bin:/bin"]}))


def copies(body: str) -> list[CopyStep]:
    graph = convert(f"FROM busybox\n{body}", resolve_base=_resolve, platform="linux/amd64",
                    build_platform="linux/amd64")
    return [s for s in graph.stage(graph.target).steps if isinstance(s, CopyStep)]


def test_which_link_flags_buildkit_merges() -> None:
    steps = copies(
        "COPY --link a /a\n"
        "COPY --link --chown=1:2 a /b\n"
        "COPY --link --chmod=640 a /c\n"         # BuildKit: link && chmod == "" only
        "COPY --link --chown=app a /d\n"         # a name needs the image's /etc/passwd: kept on the base
        "COPY a /e\n"
    )
    assert [s.link for s in steps] == [True, True, False, False, False]
    assert [s.created_by for s in steps[:3]] == [
        "COPY a /a # buildkit", "COPY --chown=1:2 a /b # buildkit", "COPY --chmod=640 a /c # buildkit"]


def test_parents_and_symbolic_chmod_are_accepted_with_buildkit_history() -> None:
    parents, chmod, exclude = copies(
        "COPY --parents ./src/./b /dst3/\nCOPY --chmod=u=rwx,g=rx,o= exec.sh /e\nCOPY --exclude=*.log src/ /ex/\n")
    assert parents.parents and parents.created_by == "COPY --parents ./src/./b /dst3/ # buildkit"
    assert chmod.chmod == "u=rwx,g=rx,o=" and chmod.created_by == "COPY --chmod=u=rwx,g=rx,o= exec.sh /e # buildkit"
    assert exclude.exclude == ("*.log",) and exclude.created_by == "COPY src/ /ex/ # buildkit"


def test_add_git_sources_and_keep_git_dir() -> None:
    (step,) = copies("ADD --keep-git-dir https://example.com/x.git#v1:sub /src/\n")
    assert step.is_add and step.keep_git_dir and step.sources == ("https://example.com/x.git#v1:sub",)


@pytest.mark.parametrize(("body", "words"), [
    ("COPY --chmod=u+q a /b\n", "invalid --chmod=u+q"),
    ("ADD --keep-git-dir a.tar /b/\n", "--keep-git-dir needs a git repository source"),
    ("ADD git@example.com:x.git#main other.txt /b/\n", "must be the only source"),
    ("ADD --checksum=sha256:" + "0" * 64 + " https://example.com/x.git /b/\n", "it is the commit hash"),
    ("ADD --unpack https://example.com/x.git /b/\n", "a repository is never an archive"),
    ("ADD --unpack=maybe a.tar /b/\n", "expecting boolean value for flag --unpack"),
])
def test_refused_combinations_are_one_line(body: str, words: str) -> None:
    with pytest.raises(DockerfileError) as info:
        copies(body)
    assert words in str(info.value) and "\n" not in str(info.value)

"""Go's filepath.Match/Clean and Docker's .dockerignore matcher, against the upstream test vectors.

The vectors are the cases of Go's ``path/filepath`` match tests and moby/patternmatcher's
``TestMatches`` / ``ignorefile.TestReadAll`` (what Docker and BuildKit run), plus the examples of
Docker's .dockerignore reference.
"""

from __future__ import annotations

import posixpath

import pytest

from lamina.build import gopath
from lamina.build.dockerignore import DockerignoreError, PatternMatcher, read_patterns

GO_MATCH = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
    ("**", "a", True),  # COPY has no globstar: ** is two stars
    ("**", "a/b", False),
]

GO_BAD = ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "*[", "ab[^c"]


@pytest.mark.parametrize(("pattern", "name", "expected"), GO_MATCH)
def test_go_match(pattern: str, name: str, expected: bool) -> None:
    assert gopath.match(pattern, name) is expected


@pytest.mark.parametrize("pattern", GO_BAD)
def test_go_match_rejects_malformed_patterns_even_when_the_match_fails_early(pattern: str) -> None:
    with pytest.raises(gopath.BadPatternError):
        gopath.match(pattern, "x")


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), ("./", "."), ("a//b/../c/.", "a/c"), ("/../x", "/x"), ("../a", "../a"), ("a/..", "."),
     ("/a/b/", "/a/b"), ("//a", "/a"), ("a/../../b", "../b")],
)
def test_go_clean(path: str, cleaned: str) -> None:
    assert gopath.clean(path) == cleaned


def _matches_walking(pm: PatternMatcher, text: str) -> bool:
    """MatchesUsingParentResults as a walker calls it: parents first, their MatchInfo passed down."""
    parent = posixpath.dirname(text)
    info: tuple[bool, ...] = ()
    if parent not in ("", "."):
        parts = parent.split("/")
        for i in range(len(parts)):
            _, info = pm.matches("/".join(parts[: i + 1]), info)
    return pm.matches(text, info)[0]


# (pattern, path, excluded?) from patternmatcher's TestMatches ("inexact" cases count as matches)
MATCHES = [
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "/", True), ("**/", "/", True), ("**", "dir/file", True), ("**/", "dir/file", True),
    ("**", "dir/file/", True), ("**/", "dir/file/", True), ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True), ("dir/**", "dir/file", True), ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True), ("dir/**", "dir/dir2/file/", True), ("**/dir", "dir", True),
    ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True), ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True), ("**file", "dir/file", True), ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True), ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True), ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True),
    (".*", ".foo", True), (".*", "foo", False), ("abc.def", "abcdef", False), ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False), ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False),
    ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True), ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False), ("abc/**", "abc/def", True), ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False), ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True), ("a\\*b", "a*b", True),
]


@pytest.mark.parametrize(("pattern", "path", "excluded"), MATCHES)
def test_dockerignore_single_pattern(pattern: str, path: str, excluded: bool) -> None:
    pm = PatternMatcher([pattern])
    assert _matches_walking(pm, path) is excluded
    assert pm.excluded(path) is excluded


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["**", "!util/docker/web"], "util/docker/web/foo", False),
        (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
        (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
        (["*.go"], "fileutils.go", True),
        (["!fileutils.go", "*.go"], "fileutils.go", True),
        (["*.go", "!fileutils.go"], "fileutils.go", False),
        (["docs", "!docs/README.md"], "docs/README.md", False),
        (["docs/", "!docs/README.md"], "docs/README.md", False),
        (["docs/*", "!docs/README.md"], "docs/README.md", False),
        (["docs"], "docs/sub/deep.txt", True),
        # Docker's .dockerignore reference examples
        (["*/temp*"], "somedir/temporary.txt", True),
        (["*/temp*"], "somedir/temp", True),
        (["*/temp*"], "temp.txt", False),
        (["*/*/temp*"], "somedir/subdir/temporary.txt", True),
        (["temp?"], "tempa", True),
        (["temp?"], "temp", False),
        (["**/*.go"], "a/b/c.go", True),
        (["**/*.go"], "c.go", True),
        (["*.md", "!README.md"], "README.md", False),
        (["*.md", "!README.md"], "CHANGES.md", True),
        (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
        (["*.md", "!README*.md", "README-secret.md"], "README-public.md", False),
        (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
        (["/foo/bar"], "foo/bar", True),
        (["./foo/../bar"], "bar", True),
    ],
)
def test_dockerignore_ordered_rules(patterns: list[str], path: str, excluded: bool) -> None:
    pm = PatternMatcher(read_patterns("\n".join(patterns)))
    assert _matches_walking(pm, path) is excluded


def test_read_patterns_as_ignorefile_readall() -> None:
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    assert read_patterns(content) == ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]


def test_read_patterns_bom_crlf_and_comment_only_in_column_one() -> None:
    data = "\ufeff# comment\r\n  # not a comment\r\n  spaced  \r\n"
    assert read_patterns(data.encode()) == ["# not a comment", "spaced"]


def test_lone_exclamation_and_bad_syntax_are_errors() -> None:
    with pytest.raises(DockerignoreError, match='illegal exclusion pattern: "!"'):
        PatternMatcher(["!"])
    with pytest.raises(DockerignoreError, match="a\\["):
        PatternMatcher(["a["])


def test_can_skip_dir_only_when_no_exception_could_reach_inside() -> None:
    assert PatternMatcher(["node_modules"]).can_skip_dir("node_modules")
    pm = PatternMatcher(["docs", "!docs/keep/me.txt"])
    assert not pm.can_skip_dir("docs")
    assert not pm.can_skip_dir("docs/keep")
    assert pm.can_skip_dir("other")
    assert not PatternMatcher(["docs", "!**/*.txt"]).can_skip_dir("docs")

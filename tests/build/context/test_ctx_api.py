"""The public API other parts call, pinned (a rename here must be a deliberate change)."""

from __future__ import annotations

import lamina.build.context as context
import lamina.build.dockerignore as dockerignore
import lamina.build.filecopy as filecopy


def test_public_api() -> None:
    assert sorted(context.__all__) == [
        "BuildContext", "ContextError", "Entry", "Selected", "SourceNotFound", "SourceTree", "file_digest",
        "split_wildcards",
    ]
    assert sorted(dockerignore.__all__) == [
        "DockerignoreError", "MatchInfo", "Pattern", "PatternMatcher", "find_ignore_file", "load_ignore_patterns",
        "read_patterns",
    ]
    assert sorted(filecopy.__all__) == [
        "CopyError", "Download", "Downloads", "OwnerResolver", "RootFS", "apply_copy", "copy_checksum",
        "extract_archive", "is_archive", "is_url", "parse_chmod",
    ]
    assert issubclass(filecopy.CopyError, context.ContextError)  # callers catch ContextError for both
    assert context.BuildContext is context.SourceTree

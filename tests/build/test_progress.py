"""Plain progress prints BuildKit-style vertex lines that CI logs (and our tests) can read."""

from __future__ import annotations

import io

import pytest

from lamina.build.progress import PlainProgress, make_progress


def test_plain_lines() -> None:
    out = io.StringIO()
    progress = PlainProgress(out)
    progress.start(1, "[stage-0 2/3] RUN echo hi")
    progress.miss(1, "parent step missed")
    progress.log(1, b"hi\npart")
    progress.log(1, b"ial\n")
    progress.done(1)
    progress.start(2, "[stage-0 3/3] COPY a /a")
    progress.cached(2, "local")
    lines = out.getvalue().splitlines()
    assert lines[0] == "#1 [stage-0 2/3] RUN echo hi"
    assert lines[1] == "#1 MISS parent step missed"
    assert lines[2].startswith("#1 0.") and lines[2].endswith(" hi")
    assert lines[3].endswith(" partial")
    assert lines[4].startswith("#1 DONE ") and lines[4].endswith("s")
    assert lines[5:] == ["#2 [stage-0 3/3] COPY a /a", "#2 CACHED"]


def test_auto_picks_plain_when_not_a_terminal() -> None:
    assert isinstance(make_progress("auto", io.StringIO()), PlainProgress)
    with pytest.raises(ValueError, match="invalid --progress"):
        make_progress("fancy", io.StringIO())


def test_tty_prints_finished_steps_with_their_status() -> None:
    from lamina.build.progress import TtyProgress

    out = io.StringIO()
    progress = TtyProgress(out)
    progress.start(1, "[stage-0 2/3] RUN make")
    progress.log(1, b"compiling\n")
    progress.done(1)
    progress.start(2, "[stage-0 3/3] COPY [a] /a")
    progress.cached(2, "local")
    progress.start(3, "[stage-0 4/4] RUN false")
    progress.error(3, "Dockerfile:4: RUN false: exit code 1")
    progress.close()
    text = out.getvalue()
    assert "DONE" in text and "[stage-0 2/3] RUN make" in text
    assert "CACHED" in text and "COPY [a] /a" in text  # names are not eaten as markup
    assert "Dockerfile:4: RUN false: exit code 1" in text

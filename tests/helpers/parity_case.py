"""One parity case end to end: stage its context, push its base image, build it with lamina, compare.

A case is a folder of tests/data/parity/: ``ctx/`` (the context), ``build.txt`` (the buildctl command
BuildKit v0.32.2 ran and what it did) and ``expected/`` (what it built, as parity_dump writes it). The
build flags come from build.txt's first ``buildctl build`` command: ``--opt build-arg:K=V`` ->
``--build-arg K=V`` (the corpus registry ``localhost:5050`` replaced by the test registry), ``--opt
platform=P`` -> ``--platform P``, ``--secret id=ID,src=PATH`` -> ``--secret`` with PATH in the corpus.

Git keeps only the x bit, so the context is copied and its modes set as the corpus README says (files
0644, directories 0755, ``*.sh`` 0755) before building: BuildKit's results depend on those modes.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .parity import Section, compare, render
from .parity_base import BASE_MAKERS
from .parity_dump import dump_layout, load_dump

__all__ = ["CORPUS", "CORPUS_REGISTRY", "Case", "CaseRun", "all_cases", "build_case", "push_bases", "run_case"]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "parity"
CORPUS_REGISTRY = "localhost:5050"
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    build_args: tuple[tuple[str, str], ...]
    platforms: str | None
    secrets: tuple[str, ...]  # "id=ID,src=ABSOLUTE_PATH"

    @property
    def expected(self) -> Path:
        return self.folder / "expected"

    def base_repositories(self) -> set[str]:
        """Repositories of the corpus registry the build args name (``base/busybox``, ...)."""
        found = set()
        for _, value in self.build_args:
            if value.startswith(CORPUS_REGISTRY + "/"):
                found.add(value.removeprefix(CORPUS_REGISTRY + "/").rsplit(":", 1)[0])
        return found

    def lamina_flags(self, registry_host: str) -> list[str]:
        flags: list[str] = []
        for key, value in self.build_args:
            flags += ["--build-arg", f"{key}={value.replace(CORPUS_REGISTRY, registry_host)}"]
        if self.platforms:
            flags += ["--platform", self.platforms]
        for secret in self.secrets:
            flags += ["--secret", secret]
        return flags


def _first_buildctl_command(text: str, source: Path) -> list[str]:
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if line.lstrip().startswith("buildctl build"):
            return shlex.split(line)
    raise ValueError(f"{source}: no 'buildctl build' command found")


def load_case(folder: Path) -> Case:
    """Read a case's build flags from its build.txt."""
    words = _first_buildctl_command((folder / "build.txt").read_text(), folder / "build.txt")
    build_args: list[tuple[str, str]] = []
    platforms: str | None = None
    secrets: list[str] = []
    for flag, value in itertools.pairwise(words):
        if flag == "--opt" and value.startswith("build-arg:"):
            key, _, arg = value.removeprefix("build-arg:").partition("=")
            build_args.append((key, arg))
        elif flag == "--opt" and value.startswith("platform="):
            platforms = value.removeprefix("platform=")
        elif flag == "--secret":
            fields = dict(part.split("=", 1) for part in value.split(","))
            if "src" in fields:
                fields["src"] = str(folder.parent / fields["src"])
            secrets.append(",".join(f"{k}={v}" for k, v in fields.items()))
    return Case(folder.name, folder, tuple(build_args), platforms, tuple(secrets))


def all_cases(corpus: Path = CORPUS) -> list[Case]:
    return [load_case(folder) for folder in sorted(corpus.iterdir()) if (folder / "build.txt").is_file()]


def stage_context(case: Case, dest: Path) -> Path:
    """Copy ``ctx/`` to ``dest`` with the corpus's modes: files 0644, dirs 0755, ``*.sh`` 0755."""
    shutil.copytree(case.folder / "ctx", dest, symlinks=True)
    dest.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames:
            (Path(dirpath) / name).chmod(0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o755 if name.endswith(".sh") else 0o644)
    return dest


def push_bases(case: Case, registry_host: str, pushed: set[str]) -> None:
    """Push the base images ``case`` needs that are not in ``pushed`` yet (updated in place)."""
    for repository in sorted(case.base_repositories() - pushed):
        maker = BASE_MAKERS.get(repository)
        if maker is None:
            raise LookupError(f"{case.name}: no maker for base image {repository!r} in parity_base.BASE_MAKERS")
        maker(registry_host)
        pushed.add(repository)


@dataclass
class CaseRun:
    """A finished build: its layout, lamina's stderr, and the differences from BuildKit's image."""

    case: Case
    layout: Path
    stderr: str
    returncode: int
    sections: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.returncode == 0 and not any(section.lines for section in self.sections)

    def report(self, max_lines: int = 40) -> str:
        if self.returncode != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-15:])
            return f"lamina build of {self.case.name} failed ({self.returncode}):\n{tail}"
        text = render(self.sections, max_lines)
        if self.warnings:
            text += "\nflatten warnings: " + "; ".join(self.warnings[:5])
        return text


def build_case(case: Case, registry_host: str, workdir: Path, python: str = sys.executable) -> CaseRun:
    """``lamina build`` the case (fresh state dir) into an OCI tar, unpacked as ``workdir/layout``."""
    context = stage_context(case, workdir / "ctx")
    out_tar, layout = workdir / "image.tar", workdir / "layout"
    argv = [
        python, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(workdir / "state"),
        *case.lamina_flags(registry_host), "--output", f"type=oci,dest={out_tar}", str(context),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    run = CaseRun(case, layout, proc.stderr, proc.returncode)
    if proc.returncode == 0:
        with tarfile.open(out_tar) as tar:
            tar.extractall(layout, filter="data")
    return run


def run_case(case: Case, registry_host: str, workdir: Path, *, strict: bool = False) -> CaseRun:
    """Build ``case`` and compare its image with ``expected/``."""
    run = build_case(case, registry_host, workdir)
    if run.returncode == 0:
        mine, run.warnings = dump_layout(run.layout)
        run.sections = compare(mine, load_dump(case.expected), strict=strict)
    return run

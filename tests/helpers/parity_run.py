"""Run parity cases by hand and print how lamina's image differs from BuildKit's.

    .venv/bin/python tests/helpers/parity_run.py CASE [CASE ...] [--max N] [--strict] [--keep DIR]
    .venv/bin/python tests/helpers/parity_run.py --all
    .venv/bin/python tests/helpers/parity_run.py --compare LAYOUT_OR_DUMP EXPECTED_DUMP

Starts a lamina registry on a free loopback port, pushes the base images the cases need, builds each
case with lamina (as root: RUN needs runc and overlay mounts) and prints the first N differences
(default 40). ``--keep DIR`` leaves the contexts, state dirs and OCI layouts in DIR. Exit status 1 when
any case differs, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.parity import compare, render
from helpers.parity_case import CORPUS, all_cases, load_case, push_bases, run_case
from helpers.parity_dump import load_dump
from helpers.registries import start_lamina


def _compare_only(mine: Path, expected: Path, max_lines: int, strict: bool) -> int:
    sections = compare(load_dump(mine), load_dump(expected), strict=strict)
    print(render(sections, max_lines))
    return 1 if any(s.lines for s in sections) else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="build parity cases with lamina and compare with BuildKit's images")
    parser.add_argument("cases", nargs="*", help=f"case names (folders of {CORPUS})")
    parser.add_argument("--all", action="store_true", help="every case")
    parser.add_argument("--max", type=int, default=40, help="difference lines to print per case")
    parser.add_argument("--strict", action="store_true", help="compare digests, sizes, diff_ids and tar sizes too")
    parser.add_argument("--keep", type=Path, help="keep the work files in this directory")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("MINE", "EXPECTED"),
                        help="only compare a layout or dump folder with a dump folder")
    args = parser.parse_args(argv)
    if args.compare:
        return _compare_only(*args.compare, args.max, args.strict)
    names = [c.name for c in all_cases()] if args.all else args.cases
    if not names:
        parser.error("name a case or pass --all; cases: " + " ".join(c.name for c in all_cases()))
    missing = [n for n in names if not (CORPUS / n / "build.txt").is_file()]
    if missing:
        parser.error(f"unknown case(s) {missing}: pick from " + " ".join(c.name for c in all_cases()))
    with tempfile.TemporaryDirectory(prefix="lamina-parity-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        registry = start_lamina(work / "registry")
        failed = 0
        try:
            pushed: set[str] = set()
            for name in names:
                case = load_case(CORPUS / name)
                push_bases(case, registry.host, pushed)
                shutil.rmtree(work / name, ignore_errors=True)
                run = run_case(case, registry.host, work / name, strict=args.strict)
                print(f"### {name}: {'identical' if run.identical else 'DIFFERS'}")
                if not run.identical:
                    failed += 1
                    print(run.report(args.max))
        finally:
            registry.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Real-world RUN steps (apt, pip, npm from the public package registries) built by two lamina trees.

Compares the lamina source tree this script belongs to with another one (``--before SRC``, e.g. a
``git worktree`` of an older commit) on the same Dockerfile, in the same invocation, rounds
interleaved: a Debian bookworm base made with ``debootstrap --variant=minbase`` (kept in ``--rootfs``
between runs), pushed to a lamina registry on loopback, then

    RUN apt-get update && apt-get install -y python3-venv nodejs npm ca-certificates
    RUN python3 -m venv /venv && /venv/bin/pip install flask requests
    RUN npm install express

The base image (``bench/_debian.py``) carries the host's extra CA certificates, so a network behind a
TLS-inspecting proxy works as it does on the host. Each build runs from an empty
state dir with ``--no-cache`` (every step runs). Prints each build's wall time, the medians and the
ratio this tree / before. The figures depend on the mirrors' speed at the
moment, which is why the two trees alternate. Needs root and the network to the package registries.

    sudo .venv/bin/python bench/realworld.py --before /tmp/base/src [--rounds 2] [--rootfs DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _debian import DEFAULT_ROOTFS, debian_rootfs, push_debian_base
from helpers.registries import start_lamina

HERE = Path(__file__).resolve().parent.parent / "src"
DOCKERFILE = """\
FROM {base}
ENV DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv nodejs npm ca-certificates
RUN python3 -m venv /venv && /venv/bin/pip install -q --no-cache-dir flask==3.0.3 requests==2.32.3
RUN mkdir /app && cd /app && npm init -y > /dev/null && npm install --no-audit --no-fund express@4.19.2
"""


def _build(src: Path, context: Path, state: Path, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    argv = [sys.executable, "-m", "lamina.cli", "build", "--no-cache", "--progress", "plain", "--root", str(state),
            *extra, str(context)]
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"build with {src} failed:\n{proc.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the src/ directory of the tree to compare with")
    parser.add_argument("--before-args", default="", help="extra lamina build flags for the before tree")
    parser.add_argument("--after-args", default="", help="extra lamina build flags for this tree")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rootfs", type=Path, default=DEFAULT_ROOTFS)
    args = parser.parse_args()
    rootfs = debian_rootfs(args.rootfs)
    trees = {"before": (args.before.resolve(), args.before_args.split()), "after": (HERE, args.after_args.split())}
    with tempfile.TemporaryDirectory(prefix="lamina-realworld-") as tmp:
        work = Path(tmp)
        registry = start_lamina(work / "registry")
        try:
            base = push_debian_base(rootfs, registry.host, work)
            context = work / "context"
            context.mkdir()
            (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
            times: dict[str, list[float]] = {name: [] for name in trees}
            for round_no in range(args.rounds):
                for name, (src, extra) in trees.items():
                    took = _build(src, context, work / f"state-{name}-{round_no}", extra)
                    times[name].append(took)
                    print(f"round {round_no + 1} {name:6} {took:7.2f} s", flush=True)
        finally:
            registry.stop()
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedian before {med['before']:.2f} s, after {med['after']:.2f} s, ratio after/before "
          f"{med['after'] / med['before']:.2f}  (below 1.0 = this tree is faster)")


if __name__ == "__main__":
    main()

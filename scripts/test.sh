#!/usr/bin/env bash
# Install everything the test suite needs, then run lint, the architecture contract and every test.
# Root-only tests (runc, overlay mounts) run when invoked as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench
lint-imports --config pyproject.toml
exec python -m pytest -p no:cacheprovider "$@"

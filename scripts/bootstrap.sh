#!/usr/bin/env bash
# Prepare this checkout: Debian packages (runc, skopeo, docker-registry, ...) and a virtualenv in .venv
# with lamina and its pinned dependencies. Idempotent: a second run only checks.
# Usage: scripts/bootstrap.sh [--test]   (--test also installs the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "lamina: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
# Reinstall only when pyproject.toml changed since the last successful install with these extras.
stamp=".venv/.lamina-installed${extras:+-test}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log=.venv/pip-install.log
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}" > "$log" 2>&1; then
    cat "$log" >&2
    echo "lamina: pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# Byte-compile lamina: PYTHONDONTWRITEBYTECODE may be set (it is on CI machines of this kind), and then
# every `lamina build` would recompile its modules (~0.15 s of start-up here). Cheap when up to date.
.venv/bin/python -m compileall -q src/lamina > /dev/null
# The same for the methods `dataclasses` generates at every import (~30 ms of a cached build's start-up,
# see lamina/dataclasscode.py): written for every lamina module, again only when a module is newer.
code_cache="$(.venv/bin/python -c 'from lamina.dataclasscode import cache_path; print(cache_path())')"
if [ ! -f "$code_cache" ] || [ -n "$(find src/lamina -name '*.py' -newer "$code_cache" -print -quit)" ]; then
  .venv/bin/python -m lamina.dataclasscode > /dev/null
fi

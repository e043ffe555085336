#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL 15 server inside a temp dir, listening on loopback only.
#
#   scripts/services/postgres.sh start [--fast] [DIR]   # prints LAMINA_PG_DIR=... and LAMINA_PG_URL=...
#   scripts/services/postgres.sh stop DIR               # stops the server and removes DIR
#
# DIR (default: a new /tmp/lamina-pg.XXXXXX) holds the data directory (DIR/data), the Unix socket (DIR,
# kept short: sockets are limited to 107 bytes) and the log (DIR/postgres.log). The server trusts every
# local and loopback connection (user postgres, no password): for tests and benchmarks, never for data
# that matters. --fast turns off fsync, synchronous_commit and full_page_writes (tests); without it the
# server is as durable as a default one (benchmarks).
# As root the server runs as the `postgres` user (runuser): DIR is made 0755 and owned by it, and every
# parent of DIR must be enterable by that user (/tmp is; pytest's private tmp folders are not).
# The port is a free one picked here (PORT in the environment overrides it).
set -euo pipefail

BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
action=${1:-}
shift || true

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$action" in
  start)
    fast=0
    if [ "${1:-}" = "--fast" ]; then
      fast=1
      shift
    fi
    if [ ! -x "$BIN/postgres" ]; then
      echo "postgres.sh: $BIN/postgres not found: install Debian's postgresql-15 (scripts/install-system-deps.sh)" >&2
      exit 1
    fi
    dir=${1:-$(mktemp -d /tmp/lamina-pg.XXXXXX)}
    mkdir -p "$dir"
    chmod 0755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres:postgres "$dir"
    fi
    port=${PORT:-$(free_port)}
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200"
    if [ "$fast" -eq 1 ]; then
      opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "$opts" -w -t 30 start >/dev/null \
      || { cat "$dir/postgres.log" >&2; exit 1; }
    echo "LAMINA_PG_DIR=$dir"
    echo "LAMINA_PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=${1:?usage: postgres.sh stop DIR}
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: postgres.sh start [--fast] [DIR] | stop DIR" >&2
    exit 2
    ;;
esac

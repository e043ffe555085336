#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway (S3 API) on loopback, for tests, benchmarks
# and trying `blobs = "s3://..."` by hand. Debian's ceph-mon, ceph-osd, radosgw and ceph-common
# (scripts/install-system-deps.sh installs them).
#
#   scripts/services/ceph-rgw.sh start [DIR]   start mon + one memstore OSD + radosgw, create an S3 user;
#                                              prints `export` lines (endpoint, keys) and writes DIR/env
#   scripts/services/ceph-rgw.sh stop DIR      stop the daemons started in DIR and remove DIR
#
# DIR (default: a new /tmp/ceph.XXXXXX) must be short: the daemons' admin sockets live under it and a
# Unix socket path has at most 107 bytes. Ports: $CEPH_MON_PORT and $RGW_PORT, else free ones.
# Everything is in memory (memstore): stopping loses every object, which is what tests want.
#
# What makes it start in 1.3 s on an idle 2-core machine, ~2 s at a load average of 10 (ceph 16.2):
#   - `auth ... required = none` and `ms mon client mode = crc`: no cephx keys to create and hand
#     around (without the crc mode radosgw hangs on "get_initial_auth_request returned -13");
#   - `paxos propose interval = 0.01` on the monitor: each map change commits at once (the default
#     1 s batching made start-up ~13 s: every pool radosgw creates waits for a proposal);
#   - pools of size 1 (`mon allow pool size one`) with one placement group each, no manager daemon;
#   - `ceph-osd --osd-uuid` equal to the uuid given to `ceph osd new` (else the OSD never boots).
set -euo pipefail

usage() {
  echo "usage: $0 start [DIR] | stop DIR" >&2
  exit 2
}

free_ports() {  # two TCP ports nothing listens on now, in one interpreter start
  python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])'
}

random_hex() {  # random_hex N: 2N hex digits
  od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 20 ms until it succeeds
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ceph-rgw: $what did not come up within ${seconds} s; logs in $DIR/log" >&2
      return 1
    fi
    sleep 0.02
  done
}

running() {  # running PID: alive and not a zombie (this machine's init reaps daemons ~1 s late)
  local state
  state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

stop() {
  DIR=${1:?$(usage)}
  [ -d "$DIR" ] || return 0
  local pids=()
  for pidfile in "$DIR"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # only our daemons: the process must still run a ceph binary with this directory's config
    if [ -n "$pid" ] && grep -qa -- "$DIR/ceph.conf" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  # everything is in memory (memstore) and thrown away: half a second for a clean exit, then SIGKILL
  # (the OSD's orderly shutdown alone takes ~7 s)
  [ "${#pids[@]}" -gt 0 ] && sleep 0.5
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do  # gone from the process table before the directory goes
    while running "$pid"; do sleep 0.01; done
  done
  rm -rf "$DIR"
}

start() {
  DIR=${1:-}
  if [ -z "$DIR" ]; then
    DIR=$(mktemp -d /tmp/ceph.XXXXXX)
  else
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ -n "$(ls -A "$DIR")" ]; then
      echo "ceph-rgw: $DIR is not empty (a cluster may run there): stop it with '$0 stop $DIR' or give an empty directory" >&2
      exit 2
    fi
  fi
  if [ "${#DIR}" -gt 60 ]; then
    echo "ceph-rgw: $DIR is ${#DIR} bytes long; use a directory path of at most 60 (admin sockets live under it)" >&2
    exit 2
  fi
  for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
    command -v "$tool" >/dev/null || {
      echo "ceph-rgw: $tool not found; run scripts/install-system-deps.sh (Debian ceph-mon ceph-osd radosgw ceph-common)" >&2
      exit 1
    }
  done
  local ports mon_port rgw_port
  read -r -a ports <<<"$(free_ports)"
  mon_port=${CEPH_MON_PORT:-${ports[0]}}
  rgw_port=${RGW_PORT:-${ports[1]}}
  local fsid osd_uuid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  mkdir -p "$DIR"/{mon,osd,run,log}
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms mon client mode = crc
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
paxos propose interval = 0.01
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
keyring = $DIR/keyring
mon data = $DIR/mon
osd data = $DIR/osd
osd objectstore = memstore
memstore device bytes = 4294967296
osd crush update on start = true
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw enable usage log = false
rgw thread pool size = 64
EOF
  local conf=(-c "$DIR/ceph.conf")
  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
  ceph-mon "${conf[@]}" --mkfs -i a --monmap "$DIR/monmap" 2>>"$DIR/log/setup.log"
  ceph-mon "${conf[@]}" -i a 2>>"$DIR/log/setup.log"
  ceph "${conf[@]}" osd new "$osd_uuid" >/dev/null 2>>"$DIR/log/setup.log"
  ceph-osd "${conf[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$DIR/log/setup.log"
  ceph-osd "${conf[@]}" -i 0 2>>"$DIR/log/setup.log"
  radosgw "${conf[@]}" -n client.rgw 2>>"$DIR/log/setup.log"
  local access secret
  access=$(random_hex 10 | tr a-f A-F)
  secret=$(random_hex 20)
  # radosgw-admin talks to RADOS itself, so it creates the user while radosgw starts
  radosgw-admin "${conf[@]}" user create --uid lamina --display-name lamina \
    --access-key "$access" --secret-key "$secret" >/dev/null 2>>"$DIR/log/setup.log"
  wait_for 30 "radosgw on 127.0.0.1:$rgw_port" curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$rgw_port/"
  cat >"$DIR/env" <<EOF
export CEPH_RGW_DIR=$DIR
export CEPH_RGW_ENDPOINT=http://127.0.0.1:$rgw_port
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_DEFAULT_REGION=default
EOF
  cat "$DIR/env"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# The main job on the embedded defaults: start a lamina registry (filesystem + SQLite under ./lamina-data),
# build the demo project in examples/demo and push it with --cache-to (the layer cache goes to the registry),
# then wipe the builder's local state and build and push again with --cache-from, as a fresh CI runner
# would. Prints both times and, per step, where the cache hit came from.
# Environment: LAMINA_DEMO_PORT (default 5000), LAMINA_DEMO_DATA (default ./lamina-data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

port="${LAMINA_DEMO_PORT:-5000}"
data="$(realpath -m "${LAMINA_DEMO_DATA:-lamina-data}")"
registry="127.0.0.1:$port"
mkdir -p "$data"

# The demo's base root filesystem: Debian's busybox-static, assembled here so nothing comes from the internet.
rootfs=examples/demo/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo cat ls mkdir rm test wc sleep env id true false; do ln -s busybox "$rootfs/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"

lamina registry serve --listen "$registry" --root "$data/registry" > "$data/registry.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if curl -fsS "http://$registry/v2/" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$data/registry.log" >&2; exit 1; fi
  sleep 0.1
done
head -n 1 "$data/registry.log"

image="$registry/demo/app:latest"
cache="$registry/demo/app:cache"
build() {
  local state="$1" log="$2"
  shift 2
  local start=$EPOCHREALTIME
  lamina build --root "$state" --progress plain -t "$image" --push "$@" examples/demo > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
  awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

state="$data/builder-state"
rm -rf "$state"
echo "== build 1: cold (empty local state), exporting the cache to $cache (mode=max)"
t1=$(build "$state" "$data/build1.log" --cache-from "type=registry,ref=$cache" \
  --cache-to "type=registry,ref=$cache,mode=max")
echo "   $(grep -c ' DONE ' "$data/build1.log") steps executed, $(grep -cE '^#[0-9]+ CACHED' "$data/build1.log") cached, ${t1}s"
grep -E '^(exported cache|WARNING: cache)' "$data/build1.log" | sed 's/^/   /'

rm -rf "$state"
echo "== build 2: a fresh runner (local state wiped), importing the cache from $cache"
t2=$(build "$state" "$data/build2.log" --cache-from "type=registry,ref=$cache" --explain-cache)
echo "   $(grep -c ' DONE ' "$data/build2.log") steps executed, $(grep -cE '^#[0-9]+ CACHED' "$data/build2.log") cached, ${t2}s"
sed -n '/^STEP /,/steps cached$/p' "$data/build2.log" | sed 's/^/   /'
echo "times: cold ${t1}s, fresh runner with the remote cache ${t2}s"
echo "pushed $image ($(tail -n 1 "$data/build2.log")); registry data in $data"

#!/usr/bin/env bash
# What many requests in flight buy and cost: a discovery of a
# latency-bound tree (a simulated source of 4,369 folders where every
# listing takes 20 ms) with 1 to 64 listing workers per side, and a copy
# to S3 (moto on 127.0.0.1) with 8 and 32 transfers. Wall time, speed-up
# over one worker, peak RSS and the most threads the process had at once
# (sampled from /proc every 20 ms).
#
#   bench/inflight.sh
#   TREESHIFT_BIN=/tmp/ts-bin bench/inflight.sh
#
# Needs the test venv with moto (.ci/run makes it), GNU time, python3.
# Knobs: LATENCY_US [20000], WORK [/tmp/bench/inflight], ONLY [both]
# (discover or copy: run that half alone).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh

LATENCY_US="${LATENCY_US:-20000}" ONLY="${ONLY:-both}"
WORK="${WORK:-/tmp/bench/inflight}"
VENV="${TREESHIFT_TEST_VENV:-/var/tmp/treeshift-venv}"
rm -rf "$WORK" && mkdir -p "$WORK"

# run LABEL ARGS...: a table row; the wall time is left in $wall
run() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$bin" "$@" >"$WORK/out" 2>"$WORK/err" &
  local timer=$! most=0 n pid
  sleep 0.05
  pid=$(pgrep -P "$timer" | head -1 || true)
  while kill -0 "$timer" 2>/dev/null; do
    n=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${n:-0}" -gt "$most" ] && most=$n
    sleep 0.02
  done
  wait "$timer" || { echo "$label failed:" >&2; cat "$WORK/err" >&2; exit 1; }
  read -r wall rss <"$WORK/time"
  local speedup=""
  [ -n "${base:-}" ] && speedup=$(python3 -c "print(f'{$base / $wall:.1f}x')")
  printf '| %s | %.2f s | %s | %d MiB | %d |\n' "$label" "$wall" "$speedup" $((rss / 1024)) "$most"
}

echo "| run | wall | speed-up | peak RSS | threads |"
echo "|---|---:|---:|---:|---:|"
src="sim:seed=1,depth=3,fanout=16,files=10,latency_us=$LATENCY_US"
base=""
[ "$ONLY" = copy ] || for workers in 1 2 4 8 16 32 64; do
  run "discover, $workers workers per side" \
    discover "$src" "$WORK/empty-$workers" --state "$WORK/d$workers.duckdb" --workers "$workers"
  [ -n "$base" ] || base=$wall
done
base=""
[ "$ONLY" = discover ] && exit 0

python3 - "$WORK/src" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(2000):
    d = os.path.join(root, f"d{i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(os.urandom(4096))
for i in range(8):
    with open(os.path.join(root, f"big{i}.bin"), "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$port/bkt" >/dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
for workers in 8 32; do
  run "copy to S3, $workers transfers" \
    migrate "$WORK/src" "s3://bkt/w$workers?endpoint=http://127.0.0.1:$port" \
    --state "$WORK/c$workers.duckdb" --yes --workers "$workers"
done

#!/usr/bin/env bash
# The source must not wait for a slow destination: discover a simulated
# source against (a) no destination at all and (b) a destination whose
# listings are 100x slower, and compare when the source side finished.
set -euo pipefail
. "$(dirname "$0")/build.sh"
work=$BENCH_DIR/slowdst; mkdir -p "$work"
tree=${TREE:-depth=3,fanout=8,files=20}
src_lat=${SRC_LATENCY_US:-500}
dst_lat=$((src_lat * 100))
run() {  # label dst
  rm -f "$work/s.duckdb" "$work/s.duckdb.wal"
  "$bin" discover "sim:$tree,latency_us=$src_lat" "$2" --state "$work/s.duckdb" --json --workers 8 \
    > "$work/$1.json" 2>/dev/null || true
  python3 - "$1" "$work/$1.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[2]))["timing"]
print(f"| {sys.argv[1]} | {t['src_done_s']:.2f} | {t['dst_done_s']:.2f} | {t['total_s']:.2f} |")
PY
}
echo "| destination | src done s | dst done s | total s |"
echo "|---|---:|---:|---:|"
run no-dst "$work/absent"
run "dst-100x-slower" "sim:$tree,mutate=2,latency_us=$dst_lat"

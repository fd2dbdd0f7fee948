#!/usr/bin/env bash
# Peak RSS and wall time of discovery on simulated trees of growing size
# (100k, 1M nodes per side), to show memory stays bounded as trees grow.
set -euo pipefail
. "$(dirname "$0")/build.sh"
work=$BENCH_DIR/scaling; mkdir -p "$work"
printf '| tree | src nodes | wall s | peak RSS MiB |\n|---|---:|---:|---:|\n'
for spec in "depth=3,fanout=10,files=90" "depth=4,fanout=10,files=90"; do
  rm -f "$work/s.duckdb" "$work/s.duckdb.wal"
  /usr/bin/time -f '%e %M' -o "$work/time" "$bin" discover "sim:$spec" "sim:$spec,mutate=3" \
    --state "$work/s.duckdb" --json > "$work/out.json" 2>/dev/null
  read -r wall rss < "$work/time"
  nodes=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["src"]; print(s["folders"]+s["files"])' "$work/out.json")
  printf '| sim:%s | %s | %s | %d |\n' "$spec" "$nodes" "$wall" $((rss / 1024))
done

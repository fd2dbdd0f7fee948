#!/usr/bin/env bash
# Discovery of simulated trees of growing size against their mutated
# copies (no latency): wall time, nodes per second (both sides), peak RSS,
# and the state file's bytes per node. Memory must stay bounded as trees
# grow.
#
#   bench/scaling.sh                       # 100k, 1M and 10M nodes a side
#   TREES="depth=3,fanout=10,files=90" bench/scaling.sh
set -euo pipefail
. "$(dirname "$0")/build.sh"
work=$BENCH_DIR/scaling; mkdir -p "$work"
trees=${TREES:-"depth=3,fanout=10,files=90 depth=4,fanout=10,files=90 depth=5,fanout=10,files=90"}
printf '| tree (vs its copy with mutate=3) | src nodes | both sides | wall s | nodes/s | peak RSS MiB | state bytes/node |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for spec in $trees; do
  rm -f "$work/s.duckdb" "$work/s.duckdb.wal"
  /usr/bin/time -f '%e %M' -o "$work/time" "$bin" discover "sim:$spec" "sim:$spec,mutate=3" \
    --state "$work/s.duckdb" --json > "$work/out.json" 2>/dev/null
  read -r wall rss < "$work/time"
  python3 - "$work/out.json" "$spec" "$wall" "$rss" "$(stat -c %s "$work/s.duckdb")" <<'PY'
import json, sys
path, spec, wall, rss, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = json.load(open(path))
count = lambda t: t["folders"] + t["files"] + t["symlinks"] + t["special"]
src, both = count(s["src"]), count(s["src"]) + count(s["dst"])
print(f"| sim:{spec} | {src:,} | {both:,} | {wall:.2f} | {both / wall:,.0f} | {rss // 1024} | {size / both:.1f} |")
PY
done
rm -f "$work/s.duckdb" "$work/s.duckdb.wal"

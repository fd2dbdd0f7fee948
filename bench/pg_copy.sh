#!/usr/bin/env bash
# Copy by the real binary with its state in PostgreSQL, shared by N
# processes: one `treeshift copy` and N-1 `treeshift worker`s, each copying
# WORKERS items at once, from a simulated source whose every read waits
# READ_MS (a latency-bound store) into a local folder. Discovery and
# approval run once first (not timed). Wall time of the copy for N in
# PROCESSES, the speed-up over one process, peak RSS of the copy process,
# and the same copy by one process on a DuckDB file beside it. Every run
# must copy every item exactly once (one `copied` event each) and leave a
# destination that `rsync -c -n -i` finds equal to the DuckDB run's, or the
# bench fails. PostgreSQL runs as a throwaway cluster on a free 127.0.0.1
# port, stopped by its PID at the end.
#
#   bench/pg_copy.sh      # DEPTH=2 FANOUT=8 FILES=40 SIZES=small READ_MS=20 WORKERS=8 PROCESSES="1 2 4"
#
# Needs apt postgresql-15, rsync and util-linux (setpriv); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
DEPTH="${DEPTH:-2}" FANOUT="${FANOUT:-8}" FILES="${FILES:-40}" SIZES="${SIZES:-small}"
READ_MS="${READ_MS:-20}" WORKERS="${WORKERS:-8}" PROCESSES="${PROCESSES:-1 2 4}"
WORK="${WORK:-/tmp/bench/pg_copy}"
if [ -z "${TREESHIFT_BIN:-}" ]; then cargo build --release -q --workspace; fi
treeshift=${TREESHIFT_BIN:-$CARGO_TARGET_DIR/release/treeshift}
. bench/pg_lib.sh

src="sim:seed=9,depth=$DEPTH,fanout=$FANOUT,files=$FILES,sizes=$SIZES,latency_us=$((READ_MS * 1000))"
folders=$(python3 -c "print(sum($FANOUT**d for d in range($DEPTH + 1)))")
echo "source: depth $DEPTH, fanout $FANOUT, $FILES files a folder ($folders folders), sizes $SIZES, $READ_MS ms a read, $WORKERS items at once per process; $(nproc) cores"
echo

# Seconds since $1 (date +%s.%N).
since() { python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$1"; }
# Peak RSS in MiB that /usr/bin/time -v wrote to $1.
rss() { awk '/Maximum resident/ { printf "%.0f", $6 / 1024 }' "$1"; }
# What rsync would still change from the DuckDB run's destination to $1.
differs() { rsync -a -c -n -i --delete "$WORK/file/" "$1/" | wc -l; }

"$treeshift" discover "$src" "$WORK/file" --state "$WORK/file.duckdb" >/dev/null 2>&1
"$treeshift" approve --state "$WORK/file.duckdb" >/dev/null
start=$(date +%s.%N)
/usr/bin/time -v -o "$WORK/file.time" "$treeshift" copy --state "$WORK/file.duckdb" \
  --workers "$WORKERS" --json >"$WORK/file.json" 2>/dev/null
file_wall=$(since "$start")
items=$(python3 -c "import json; print(json.load(open('$WORK/file.json'))['copied'])")
bytes=$(python3 -c "import json; print(json.load(open('$WORK/file.json'))['bytes_copied'])")
echo "DuckDB file, 1 process: $file_wall s, $items items ($bytes bytes), peak RSS $(rss "$WORK/file.time") MiB"
echo
echo "| processes | wall s | speed-up | per process | items/s | peak RSS MiB (copy) |"
echo "|---:|---:|---:|---:|---:|---:|"
base=
for n in $PROCESSES; do
  db="c$n" dst="$WORK/dst$n"
  psql -c "CREATE DATABASE $db" postgres
  url="postgres://postgres@127.0.0.1:$port/$db"
  "$treeshift" discover "$src" "$dst" --state "$url" >/dev/null 2>&1
  "$treeshift" approve --state "$url" >/dev/null
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/copy.$n.time" "$treeshift" copy --state "$url" \
    --workers "$WORKERS" >/dev/null 2>&1 &
  pids=($!)
  for _ in $(seq 2 "$n"); do
    "$treeshift" worker --state "$url" --workers "$WORKERS" >/dev/null 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  wall=$(since "$start")
  copied=$(psql -c "SELECT count(*) FROM src_status_events WHERE phase = 'copy' AND status = 'copied'" "$db")
  left=$(differs "$dst")
  [ "$copied" = "$items" ] && [ "$left" = 0 ] ||
    { echo "$n processes: $copied copied events for $items items; rsync would change $left" >&2; exit 1; }
  base=${base:-$wall}
  python3 -c "s=$base/$wall; print(f'| $n | $wall | {s:.2f}x | {s/$n:.2f}xN | {$items/$wall:.0f} | $(rss "$WORK/copy.$n.time") |')"
done

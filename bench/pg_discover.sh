#!/usr/bin/env bash
# Discovery by the real binary with its state in PostgreSQL, shared by N
# processes: one `treeshift discover` and N-1 `treeshift worker`s, each
# listing WORKERS folders at once, on a simulated pair of trees whose
# listings take LIST_MS each (the destination a mutated copy of the
# source). Wall time for N in PROCESSES, the speed-up over one process,
# peak RSS of the discover process, and the same discovery by one process
# on a DuckDB file beside it. Every run's summary must equal the DuckDB
# run's, or the bench fails. PostgreSQL runs as a throwaway cluster on a
# free 127.0.0.1 port, stopped by its PID at the end.
#
#   bench/pg_discover.sh      # DEPTH=4 FANOUT=8 FILES=200 LIST_MS=20 WORKERS=8 PROCESSES="1 2 4 8"
#                             # TREESHIFT_BIN=path: that binary instead of this tree's
#
# Needs apt postgresql-15 and util-linux (setpriv); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
DEPTH="${DEPTH:-4}" FANOUT="${FANOUT:-8}" FILES="${FILES:-200}" LIST_MS="${LIST_MS:-20}"
WORKERS="${WORKERS:-8}" PROCESSES="${PROCESSES:-1 2 4 8}"
WORK="${WORK:-/tmp/bench/pg_discover}"
if [ -z "${TREESHIFT_BIN:-}" ]; then cargo build --release -q --workspace; fi
treeshift=${TREESHIFT_BIN:-$CARGO_TARGET_DIR/release/treeshift}
. bench/pg_lib.sh

src="sim:seed=9,depth=$DEPTH,fanout=$FANOUT,files=$FILES,latency_us=$((LIST_MS * 1000))"
dst="$src,mutate=4,del_dirs=5,del_files=5,modify=5,extra=5"
folders=$(python3 -c "print(sum($FANOUT**d for d in range($DEPTH + 1)))")
echo "trees: depth $DEPTH, fanout $FANOUT, $FILES files a folder ($folders folders a side), $LIST_MS ms a listing, $WORKERS listings at once per process; $(nproc) cores"
echo

# The summary of a run's --json output.
# (flattened in it, with the calls and the timing beside).
summary() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [d.pop(k) for k in ('calls', 'timing')]; print(json.dumps(d, sort_keys=True))" "$1"; }
# Seconds since $1 (date +%s.%N).
since() { python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }
# Peak RSS in MiB that /usr/bin/time -v wrote to $1.
rss() { awk '/Maximum resident/ { printf "%.0f", $6 / 1024 }' "$1"; }

start=$(date +%s.%N)
/usr/bin/time -v "$treeshift" discover "$src" "$dst" --state "$WORK/one.duckdb" --workers "$WORKERS" \
  --json >"$WORK/duckdb.json" 2>"$WORK/duckdb.err"
duck_wall=$(since "$start")
want=$(summary "$WORK/duckdb.json")

echo "| state | processes | wall s | speed-up | per process | discover's peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| DuckDB file | 1 | $duck_wall | | | $(rss "$WORK/duckdb.err") |"
base=
for n in $PROCESSES; do
  db="p$n"
  psql -c "CREATE DATABASE $db" postgres
  url="postgres://postgres@127.0.0.1:$port/$db"
  start=$(date +%s.%N)
  /usr/bin/time -v "$treeshift" discover "$src" "$dst" --state "$url" --workers "$WORKERS" \
    --json >"$WORK/d.$n.json" 2>"$WORK/d.$n.err" &
  pids=($!)
  # The workers join once discover made the migration.
  until [ "$(psql -c "SELECT to_regclass('src_leases') IS NOT NULL" "$db")" = t ]; do sleep 0.05; done
  for i in $(seq 2 "$n"); do
    "$treeshift" worker --state "$url" --workers "$WORKERS" --json >"$WORK/w.$n.$i.json" 2>/dev/null &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  wall=$(since "$start")
  for out in "$WORK/d.$n.json" "$WORK"/w."$n".*.json; do
    [ -e "$out" ] || continue
    [ "$(summary "$out")" = "$want" ] || { echo "$out: not the DuckDB run's summary" >&2; exit 1; }
  done
  base=${base:-$wall}
  python3 -c "s=$base/$wall; print(f'| PostgreSQL | $n | $wall | {s:.2f}x | {s/$n:.2f}xN | $(rss "$WORK/d.$n.err") |')"
done

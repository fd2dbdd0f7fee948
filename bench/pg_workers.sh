#!/usr/bin/env bash
# Discovery's leases shared by N worker processes through the PostgreSQL
# store, against a latency-bound tree: DEPTH levels, each folder holding
# FANOUT folders and FANOUT files, LIST_MS per listing. Wall time for N in
# WORKERS, the speed-up over one worker, and a check that every folder was
# listed exactly once (the processes' counts add up to the tree's folders,
# and the database holds each node once). PostgreSQL runs as a throwaway
# cluster on a free 127.0.0.1 port, stopped by its PID at the end.
#
#   bench/pg_workers.sh                    # DEPTH=3 FANOUT=10 LIST_MS=20, WORKERS="1 2 4 8"
#
# Needs apt postgresql-15 and util-linux (setpriv); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
DEPTH="${DEPTH:-3}" FANOUT="${FANOUT:-10}" LIST_MS="${LIST_MS:-20}" WORKERS="${WORKERS:-1 2 4 8}"
WORK="${WORK:-/tmp/bench/pg_workers}"
cargo build --release -q --workspace --examples
worker=$CARGO_TARGET_DIR/release/examples/lease_workers
. bench/pg_lib.sh

folders=$(python3 -c "print(sum($FANOUT**d for d in range($DEPTH + 1)))")
echo "tree: depth $DEPTH, fanout $FANOUT ($folders folders), $LIST_MS ms a listing; $(nproc) cores"
echo
echo "| workers | wall s | speed-up | per worker | folders listed | nodes recorded |"
echo "|---:|---:|---:|---:|---:|---:|"
base=
for n in $WORKERS; do
  db="w$n"
  psql -c "CREATE DATABASE $db" postgres
  url="postgres://postgres@127.0.0.1:$port/$db"
  # All start at once: the first to open makes the migration, the others
  # wait for it and find it made.
  start=$(date +%s.%N)
  pids=()
  for i in $(seq "$n"); do
    "$worker" "$url" "$DEPTH" "$FANOUT" "$LIST_MS" >"$WORK/out.$n.$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  wall=$(python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')")
  listed=$(cat "$WORK"/out."$n".* | paste -sd+ | bc)
  nodes=$(psql -c "SELECT count(*) FROM src_nodes" "$db")
  doubled=$(psql -c "SELECT count(*) FROM (SELECT rel_path FROM src_nodes GROUP BY rel_path HAVING count(*) > 1) d" "$db")
  [ "$listed" = "$folders" ] && [ "$doubled" = 0 ] || { echo "listed $listed of $folders folders, $doubled paths twice" >&2; exit 1; }
  base=${base:-$wall}
  python3 -c "s=$base/$wall; print(f'| $n | $wall | {s:.2f}x | {s/$n:.2f}xN | $listed | $nodes |')"
done

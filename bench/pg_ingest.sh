#!/usr/bin/env bash
# Bulk ingest into the state store: rows per second as a listing's rows
# arrive (one folder of ROWS files in pages of 2,048, then completed),
# into PostgreSQL (one connection, binary COPY, each page its own
# transaction with its lease checked) and into DuckDB (the store thread's
# buffered appends, committed in batches), REPS alternating runs each.
# PostgreSQL runs as a throwaway cluster on a free 127.0.0.1 port
# (initdb as the postgres user), stopped by its PID at the end.
#
#   bench/pg_ingest.sh                      # ROWS=1000000, REPS=3
#   ROWS=200000 REPS=1 bench/pg_ingest.sh
#
# Needs apt postgresql-15 and util-linux (setpriv); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
ROWS="${ROWS:-1000000}" REPS="${REPS:-3}" WORK="${WORK:-/tmp/bench/pg_ingest}"
cargo build --release -q --workspace --examples
ingest=$CARGO_TARGET_DIR/release/examples/ingest
. bench/pg_lib.sh

echo "rows: $ROWS, $(nproc) cores, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
echo
echo "| rep | store | rows | seconds | rows/s | bytes/row |"
echo "|---:|---|---:|---:|---:|---:|"
for rep in $(seq "$REPS"); do
  db="ingest$rep"
  psql -c "CREATE DATABASE $db" postgres
  for store in postgresql duckdb; do
    if [ $store = postgresql ]; then
      location="postgres://postgres@127.0.0.1:$port/$db"
    else
      location="$WORK/$db.duckdb"
    fi
    read -r name rows secs rate < <("$ingest" "$location" "$ROWS")
    if [ $store = postgresql ]; then
      psql -c "VACUUM ANALYZE src_nodes" "$db"
      bytes=$(psql -c "SELECT pg_total_relation_size('src_nodes')" "$db")
    else
      bytes=$(stat -c %s "$location")
    fi
    echo "| $rep | $name | $rows | $secs | $rate | $((bytes / rows)) |"
  done
done
echo
echo "bytes/row: PostgreSQL's src_nodes with its indexes; DuckDB's whole state file"

#!/usr/bin/env bash
# `treeshift discover` with a fresh state file, so every timed repetition of
# the peer harness does the full work (a reused state file would resume and
# finish at once). Prints the --json summary.
set -euo pipefail
bin=${TREESHIFT_BIN:?set TREESHIFT_BIN to the treeshift binary}
state=${TREESHIFT_BENCH_STATE:-${BENCH_DIR:-/tmp/bench}/treeshift-bench.duckdb}
rm -f "$state" "$state.wal"
exec "$bin" discover "$1" "$2" --state "$state" --json ${TREESHIFT_ARGS:-}

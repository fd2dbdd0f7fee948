#!/usr/bin/env bash
# `treeshift migrate --yes` (discover, approve, copy, verify) with a fresh
# state file, for the copy phases of the peer harness. Prints the --json
# result. TREESHIFT_ARGS adds flags (e.g. --checksum, --workers 4).
set -euo pipefail
bin=${TREESHIFT_BIN:?set TREESHIFT_BIN to the treeshift binary}
state=${TREESHIFT_BENCH_STATE:-${BENCH_DIR:-/tmp/bench}/treeshift-bench.duckdb}
rm -f "$state" "$state.wal"
exec "$bin" migrate "$1" "$2" --state "$state" --yes --json ${TREESHIFT_ARGS:-}

# Sourced by the bench scripts: builds the release binary once (DuckDB's
# build is cached in CARGO_TARGET_DIR) and sets $bin and $BENCH_DIR.
# With TREESHIFT_BIN set, nothing is built and that binary is used.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
repo=$(cd "$here/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
if [ -n "${TREESHIFT_BIN:-}" ]; then
  [ -x "$TREESHIFT_BIN" ] || { echo "TREESHIFT_BIN=$TREESHIFT_BIN is not an executable" >&2; exit 1; }
  bin=$TREESHIFT_BIN
else
  (cd "$repo" && cargo build --release -q --workspace)
  bin=$CARGO_TARGET_DIR/release/treeshift
fi
BENCH_DIR=${BENCH_DIR:-/tmp/bench}

# Sourced by the bench scripts: builds the release binary once (DuckDB's
# build is cached in CARGO_TARGET_DIR) and sets $bin and $BENCH_DIR.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
repo=$(cd "$here/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
(cd "$repo" && cargo build --release -q -p treeshift)
bin=$CARGO_TARGET_DIR/release/treeshift
BENCH_DIR=${BENCH_DIR:-/tmp/bench}

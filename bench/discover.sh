#!/usr/bin/env bash
# Discovery side by side with rsync -a -n and rclone copy --dry-run (and the
# find/fd listing floors) on the shared scenarios, in one run of the shared
# harness, so every ratio comes from the same machine state.
#
#   bench/discover.sh                    # S1 and S3, warm and cold, 3 reps
#   SCENARIOS=T REPS=1 bench/discover.sh # smoke test
#
# Needs: rsync rclone python3 time (apt). Results: bench/results/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
peers=${PEERS_DIR:-$repo/../shared/bench}
[ -x "$peers/run_peers.sh" ] || { echo "peer harness not found at $peers (set PEERS_DIR)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/treeshift-target}
(cd "$repo" && cargo build --release -q -p treeshift)
export TREESHIFT_BIN=$CARGO_TARGET_DIR/release/treeshift
export ENGINE_CMD=$here/engine.sh
export ENGINE_DISCOVER_ARGS='{SRC} {DST}'
export ENGINE_COUNT_CMD='grep -A4 "\"to_copy\"" "$1" | grep "\"files\"" | grep -o "[0-9][0-9]*"'
export PHASES=${PHASES:-discover}
export SCENARIOS=${SCENARIOS:-S1 S3}
export RESULTS_DIR=${RESULTS_DIR:-$here/results}
export TOOLS=${TOOLS:-find-stat|fdfind|rsync-n|rclone-dryrun|engine}
exec "$peers/run_peers.sh"

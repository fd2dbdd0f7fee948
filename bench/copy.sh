#!/usr/bin/env bash
# Full and incremental copy side by side with rsync -a, rclone copy and
# cp -a (cp -au for incremental) on the shared scenarios, in one run of the
# shared harness. treeshift runs `migrate --yes`: discovery, approval, copy
# and the (metadata) verification, with the full resumable state, and
# `--policy overwrite` so that differing files are copied as the peers do. The
# harness checks every destination with treecmp.py.
#
#   bench/copy.sh                          # S1 and S3, 3 reps
#   SCENARIOS="S1 S3 S2" REPS=1 bench/copy.sh
#
# Needs: rsync rclone python3 time (apt). Results: bench/results/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/build.sh"
peers=${PEERS_DIR:-$repo/../shared/bench}
[ -x "$peers/run_peers.sh" ] || { echo "peer harness not found at $peers (set PEERS_DIR)" >&2; exit 1; }
export TREESHIFT_BIN=$bin BENCH_DIR
export ENGINE_CMD=$here/migrate.sh
export ENGINE_COPY_ARGS='{SRC} {DST}'
export ENGINE_INCR_ARGS='{SRC} {DST}'
export PHASES=${PHASES:-full incr}
export SCENARIOS=${SCENARIOS:-S1 S3}
export RESULTS_DIR=${RESULTS_DIR:-$here/results}
export TOOLS=${TOOLS:-rsync|rclone-copy|cp-a|cp-au|engine}
# Like the peers, replace files that differ (treeshift's default leaves them).
export TREESHIFT_ARGS=${TREESHIFT_ARGS:---policy overwrite}
exec "$peers/run_peers.sh"

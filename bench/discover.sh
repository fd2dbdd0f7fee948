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
. "$here/build.sh"
export TREESHIFT_BIN=$bin
export ENGINE_CMD=$here/engine.sh
export ENGINE_DISCOVER_ARGS='{SRC} {DST}'
# The files rsync -n lists: the missing and the differing ones (what
# `approve --policy overwrite` copies; the default approval, `to_copy`,
# leaves the differing ones alone). The harness's trees hold files only;
# the log has the progress lines before the JSON.
export ENGINE_COUNT_CMD='python3 -c "import json,sys; t=open(sys.argv[1]).read(); d=json.loads(t[t.index(chr(123)):]); print(d[\"to_copy\"][\"files\"] + d[\"differs\"])" "$1"'
export PHASES=${PHASES:-discover}
export SCENARIOS=${SCENARIOS:-S1 S3}
export RESULTS_DIR=${RESULTS_DIR:-$here/results}
export TOOLS=${TOOLS:-find-stat|fdfind|rsync-n|rclone-dryrun|engine}
exec "$peers/run_peers.sh"

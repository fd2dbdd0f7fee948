#!/usr/bin/env bash
# How fast the HTTP API answers on a 1M-node migration, on an idle
# server: status, a page of 1,000 review rows (the first and one deep in
# the listing) and a folder browsed, each asked 20 times (the root browsed
# once before: that browse sums what is below each folder); a plan
# previewed once per policy, then the last one 20 times. Then status and
# a review page asked every 100 ms while a discovery of the same 1M-node
# tree runs on that server. p50 and p95 in milliseconds
# (curl's total time, one request at a time).
#
#   bench/api.sh
#   TREESHIFT_BIN=/tmp/ts-bin bench/api.sh
#   PG=postgres://postgres@127.0.0.1:5432 bench/api.sh   # the state in PostgreSQL
#
# Knobs: TREE [sim:depth=4,fanout=10,files=90: 1,011,100 source nodes],
# WORK [/tmp/bench/api], N [20], PG [unset: state files; set: a server
# where the script makes the databases api_idle and api_busy1, 2, ...],
# BUSY_RUNS [1: discoveries asked during, one after another, each its own
# migration and table], BUSY_ONLY [unset; 1: no idle part].
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh

TREE="${TREE:-sim:depth=4,fanout=10,files=90}" N="${N:-20}" BUSY_RUNS="${BUSY_RUNS:-1}"
WORK="${WORK:-/tmp/bench/api}"
rm -rf "$WORK" && mkdir -p "$WORK/states"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port/api/migrations"

"$bin" serve --dir "$WORK/states" --listen "127.0.0.1:$port" 2>"$WORK/server.err" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -sf "$api" >/dev/null; do sleep 0.1; done

# post PATH BODY (PATH empty: the migrations themselves)
post() { curl -sf -H 'content-type: application/json' -d "$2" "$api${1:+/$1}" >/dev/null; }
# wait_job NAME: until its job has ended
wait_job() {
  until curl -sf "$api/$1" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["job"]["running"] is False else 1)'; do
    sleep 0.5
  done
}
# times URL COUNT PAUSE: request times in ms, one a line
times() {
  for _ in $(seq "$2"); do
    curl -s -o /dev/null -w '%{time_total}\n' "$1" | awk '{printf "%.1f\n", $1 * 1000}'
    sleep "$3"
  done
}
# row LABEL FILE: p50 and p95 of the times in FILE
row() {
  python3 - "$1" "$2" <<'PY'
import sys, statistics
label, path = sys.argv[1], sys.argv[2]
t = sorted(float(x) for x in open(path) if x.strip())
p95 = t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))]
print(f"| {label} | {len(t)} | {statistics.median(t):.0f} | {p95:.0f} |")
PY
}

# state NAME: the create request's state field, a new database with PG
state() {
  [ -n "${PG:-}" ] || return 0
  psql="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql"
  PGOPTIONS='-c client_min_messages=warning' "$psql" -q "$PG/postgres" \
    -c "DROP DATABASE IF EXISTS api_$1" -c "CREATE DATABASE api_$1"
  printf ',"state":"%s/api_%s"' "$PG" "$1"
}

echo "tree: $TREE; state: $([ -n "${PG:-}" ] && echo PostgreSQL || echo DuckDB files)"
if [ -z "${BUSY_ONLY:-}" ]; then
  post "" "{\"name\":\"idle\",\"src\":\"$TREE\",\"dst\":\"$WORK/dst\"$(state idle)}"
  start=$(date +%s.%N)
  post "idle/jobs/discover" '{}'
  wait_job idle
  echo "discovery through the API: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
  deep=$(curl -sf "$api/idle/review?status=missing&limit=1000" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
  for _ in $(seq 200); do
    next=$(curl -sf "$api/idle/review?status=missing&limit=1000&after=$deep" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
    [ "$next" = None ] && break
    deep=$next
  done

  echo
  echo "| request (idle server) | n | p50 ms | p95 ms |"
  echo "|---|---:|---:|---:|"
  times "$api/idle" "$N" 0 >"$WORK/t" && row "status" "$WORK/t"
  times "$api/idle/review?status=missing&limit=1000" "$N" 0 >"$WORK/t" && row "review, first page of 1,000" "$WORK/t"
  times "$api/idle/review?status=missing&limit=1000&after=$deep" "$N" 0 >"$WORK/t" && row "review, a page up to 200k rows in (the last page of a smaller tree)" "$WORK/t"
  times "$api/idle/browse" 1 0 >"$WORK/t" && row "browse the root, the first time (sums what is below each folder)" "$WORK/t"
  times "$api/idle/browse" "$N" 0 >"$WORK/t" && row "browse the root" "$WORK/t"
  times "$api/idle/browse?path=d00" "$N" 0 >"$WORK/t" && row "browse a folder one level down (d00)" "$WORK/t"
  times "$api/idle/browse?path=d00/d00" "$N" 0 >"$WORK/t" && row "browse a folder two levels down (d00/d00)" "$WORK/t"
  times "$api/idle/plan?policy=overwrite" 1 0 >"$WORK/t" && row "plan preview, overwrite" "$WORK/t"
  times "$api/idle/plan?policy=skip" 1 0 >"$WORK/t" && row "plan preview, skip (another policy: drafted anew)" "$WORK/t"
  times "$api/idle/plan?policy=skip" "$N" 0 >"$WORK/t" && row "plan preview, skip again (nothing changed: the same draft)" "$WORK/t"
fi

for run in $(seq "$BUSY_RUNS"); do
  post "" "{\"name\":\"busy$run\",\"src\":\"$TREE\",\"dst\":\"$WORK/dst-busy$run\"$(state busy$run)}"
  post "busy$run/jobs/discover" '{}'
  : >"$WORK/status" && : >"$WORK/review"
  while curl -sf "$api/busy$run" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["job"]["running"] else 1)'; do
    times "$api/busy$run" 1 0 >>"$WORK/status"
    times "$api/busy$run/review?status=missing&limit=1000" 1 0.1 >>"$WORK/review"
  done
  echo
  echo "| request (while the same migration's discovery runs) | n | p50 ms | p95 ms |"
  echo "|---|---:|---:|---:|"
  row "status" "$WORK/status"
  row "review, first page of 1,000" "$WORK/review"
done
echo
echo "server peak RSS: $(awk '/VmHWM/ {print int($2/1024)}' /proc/$server/status) MiB"

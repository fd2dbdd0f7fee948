#!/usr/bin/env bash
# Local tree to S3 and back, treeshift next to rclone, against one S3
# server (moto) on 127.0.0.1: a full upload, its content checked against
# the source, a second run with nothing to do, and a full download. Wall time, peak RSS, and for treeshift the HTTP
# requests it sent (`--json` calls.*.requests.sent).
#
#   bench/remote.sh                                   # FILES=2000, REPS=3
#   TREESHIFT_BIN=/tmp/ts-bin FILES=5000 REPS=1 bench/remote.sh
#
# moto is a Python server: it is the bottleneck of both tools, so the
# ratios say how many requests each tool needs and how well it keeps the
# server busy, not what either would do against a real S3.
#
# Needs the test venv with moto (.ci/run makes it: TREESHIFT_TEST_VENV,
# /var/tmp/treeshift-venv by default), rclone, GNU time, python3.
# Knobs: FILES [2000] small files (4 KiB, in folders of 100), BIG [4] files
# of 24 MiB (multipart uploads), REPS [3], TRANSFERS [8] (rclone
# --transfers and treeshift --workers), WORK [/tmp/bench/remote].
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh

FILES="${FILES:-2000}" BIG="${BIG:-4}" REPS="${REPS:-3}" TRANSFERS="${TRANSFERS:-8}"
WORK="${WORK:-/tmp/bench/remote}"
VENV="${TREESHIFT_TEST_VENV:-/var/tmp/treeshift-venv}"
rm -rf "$WORK" && mkdir -p "$WORK"

python3 - "$WORK/src" "$FILES" "$BIG" <<'EOF'
import os, sys
root, files, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(files):
    d = os.path.join(root, f"d{i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(os.urandom(4096))
for i in range(big):
    with open(os.path.join(root, f"big{i}.bin"), "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
EOF

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$port/bkt" >/dev/null

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other \
  RCLONE_CONFIG_B_ENDPOINT="http://127.0.0.1:$port" RCLONE_CONFIG_B_ACCESS_KEY_ID=bench \
  RCLONE_CONFIG_B_SECRET_ACCESS_KEY=bench-secret RCLONE_CONFIG_B_FORCE_PATH_STYLE=true
unset AWS_CA_BUNDLE  # rclone 1.60 cannot reach S3 with it set

# measure LABEL CMD...: one line "label wall_s rss_kib", stdout of CMD to $WORK/out
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
    echo "$label failed:" >&2; cat "$WORK/err" >&2; exit 1; }
  echo "$label $(cat "$WORK/time")" >>"$WORK/rows"
}

sent() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["calls"][sys.argv[2]]["requests"]["sent"])' "$WORK/out" "$1"; }

: >"$WORK/rows"
for rep in $(seq "$REPS"); do
  ts="s3://bkt/ts$rep?endpoint=http://127.0.0.1:$port"
  rc="b:bkt/rc$rep"
  measure "upload/treeshift" "$bin" migrate "$WORK/src" "$ts" --state "$WORK/up$rep.duckdb" --yes --json --workers "$TRANSFERS"
  echo "requests upload/treeshift $(sent dst)" >>"$WORK/rows"
  measure "upload/rclone" rclone copy "$WORK/src" "$rc" --transfers "$TRANSFERS" --checkers "$TRANSFERS"
  # Content checked against the source: treeshift verify --checksum (the
  # store's MD5 where it gives one, else the object read back and hashed),
  # rclone check (sizes and MD5s; rclone keeps a multipart upload's MD5
  # in its metadata, so it reads nothing back).
  measure "check/treeshift" "$bin" verify --state "$WORK/up$rep.duckdb" --checksum --json --workers "$TRANSFERS"
  echo "requests check/treeshift $(sent dst)" >>"$WORK/rows"
  measure "check/rclone" rclone check "$WORK/src" "$rc" --checkers "$TRANSFERS"
  # Nothing changed: treeshift's next pass (discover, nothing to approve
  # or copy), rclone copy again (it reads each object's mtime with a HEAD).
  measure "again/treeshift" "$bin" discover "$WORK/src" "$ts" --state "$WORK/up$rep.duckdb" --json
  echo "requests again/treeshift $(sent dst)" >>"$WORK/rows"
  measure "again/rclone" rclone copy "$WORK/src" "$rc" --transfers "$TRANSFERS" --checkers "$TRANSFERS"
  rm -rf "$WORK/back-ts" "$WORK/back-rc"
  measure "download/treeshift" "$bin" migrate "$ts" "$WORK/back-ts" --state "$WORK/down$rep.duckdb" --yes --json --workers "$TRANSFERS"
  echo "requests download/treeshift $(sent src)" >>"$WORK/rows"
  measure "download/rclone" rclone copy "$rc" "$WORK/back-rc" --transfers "$TRANSFERS" --checkers "$TRANSFERS"
  # Both downloads equal the source, data and mtimes (rsync finds nothing).
  for back in back-ts back-rc; do
    diff=$(rsync -rc -t --omit-dir-times -n -i --delete "$WORK/src/" "$WORK/$back/")
    [ -z "$diff" ] || { echo "$back differs from the source:" >&2; echo "$diff" | head >&2; exit 1; }
  done
done

python3 - "$WORK/rows" <<'EOF'
import statistics, sys
walls, rss, reqs = {}, {}, {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "requests":
        reqs.setdefault(parts[1], []).append(int(parts[2]))
        continue
    walls.setdefault(parts[0], []).append(float(parts[1]))
    rss.setdefault(parts[0], []).append(int(parts[2]))
print("| step | tool | median wall | vs rclone | peak RSS | requests |")
print("|---|---|---:|---:|---:|---:|")
for step in ["upload", "check", "again", "download"]:
    base = statistics.median(walls[f"{step}/rclone"])
    for tool in ["rclone", "treeshift"]:
        k = f"{step}/{tool}"
        w = statistics.median(walls[k])
        r = reqs.get(k)
        print(f"| {step} | {tool} | {w:.2f} s | {w / base:.2f}x | {max(rss[k]) // 1024} MiB | "
              f"{statistics.median(r) if r else ''} |")
EOF

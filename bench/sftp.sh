#!/usr/bin/env bash
# Local tree to an SFTP server and back, treeshift next to rsync (over
# ssh) and rclone (sftp), against one OpenSSH server on 127.0.0.1: a full
# upload, a second run with nothing to do, and a full download. Wall
# time, peak RSS, and for treeshift the SFTP requests it sent.
#
#   bench/sftp.sh                                     # FILES=2000, REPS=3
#   TREESHIFT_BIN=/tmp/ts-bin FILES=5000 REPS=1 bench/sftp.sh
#
# The server runs on the same 2 cores as the tools, so each tool's ratio
# says how much work it makes for a server as much as how fast it is.
# rclone runs with disable_hashcheck (it would otherwise run md5sum on
# the server for every file), so no tool checksums what it wrote; rsync
# checks each transfer with its own rolling checksums.
#
# Needs sshd and ssh (apt openssh-server), rsync, rclone, GNU time,
# python3. Knobs: FILES [2000] small files (4 KiB, in folders of 100), BIG
# [4] files of 24 MiB, REPS [3], TRANSFERS [8] (rclone --transfers and
# treeshift --workers), WORK [/tmp/bench/sftp].
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh

FILES="${FILES:-2000}" BIG="${BIG:-4}" REPS="${REPS:-3}" TRANSFERS="${TRANSFERS:-8}"
WORK="${WORK:-/tmp/bench/sftp}"
rm -rf "$WORK" && mkdir -p "$WORK/keys" "$WORK/served"

python3 - "$WORK/src" "$FILES" "$BIG" <<'PY'
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
PY

keys="$WORK/keys"
ssh-keygen -q -t ed25519 -N '' -f "$keys/host"
ssh-keygen -q -t ed25519 -N '' -f "$keys/user"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$keys/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $keys/host
AuthorizedKeysFile $keys/user.pub
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
PermitRootLogin prohibit-password
UsePAM yes
PidFile none
Subsystem sftp internal-sftp
CFG
echo "[127.0.0.1]:$port $(cat "$keys/host.pub")" >"$keys/known_hosts"
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$keys/sshd_config" 2>"$WORK/sshd.log" &
sshd=$!
trap 'kill $sshd 2>/dev/null' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.2; done

ssh_opts="-p $port -i $keys/user -o IdentitiesOnly=yes -o UserKnownHostsFile=$keys/known_hosts -o BatchMode=yes"
ts_opts="key=$keys/user&known_hosts=$keys/known_hosts"
export RCLONE_CONFIG=/dev/null
rc_remote=":sftp,host=127.0.0.1,port=$port,user=root,key_file=$keys/user,known_hosts_file=$keys/known_hosts,disable_hashcheck=true"

# measure LABEL CMD...: one line "label wall_s rss_kib", stdout of CMD to $WORK/out
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
    echo "$label failed:" >&2; cat "$WORK/err" >&2; exit 1; }
  echo "$label $(cat "$WORK/time")" >>"$WORK/rows"
}

sent() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["calls"][sys.argv[2]]["requests"]["sent"])' "$WORK/out" "$1"; }

# same DIR [RSYNC_FLAGS]: rsync finds nothing to change between the
# source and DIR, data by checksum, with what the flags compare (default
# -a: modes, owners, mtimes of files and folders).
same() {
  local diff
  diff=$(rsync ${2:--a} -c -n -i --delete "$WORK/src/" "$1/")
  [ -z "$diff" ] || { echo "$1 differs from the source:" >&2; echo "$diff" | head >&2; exit 1; }
}

: >"$WORK/rows"
for rep in $(seq "$REPS"); do
  served="$WORK/served"
  rm -rf "$served" "$WORK"/back-* && mkdir -p "$served"
  ts="sftp://root@127.0.0.1:$port$served/ts?$ts_opts"
  measure "upload/treeshift" "$bin" migrate "$WORK/src" "$ts" --state "$WORK/up$rep.duckdb" --yes --json --workers "$TRANSFERS"
  echo "requests upload/treeshift $(sent dst)" >>"$WORK/rows"
  measure "upload/rsync" rsync -a -e "ssh $ssh_opts" "$WORK/src/" "root@127.0.0.1:$served/rs/"
  measure "upload/rclone" rclone copy "$WORK/src" "$rc_remote:$served/rc" --transfers "$TRANSFERS" --checkers "$TRANSFERS"
  # rclone keeps neither modes nor folders' mtimes: its copies are checked
  # for data and files' mtimes.
  same "$served/ts"; same "$served/rs"; same "$served/rc" "-r -t --omit-dir-times"
  measure "again/treeshift" "$bin" discover "$WORK/src" "$ts" --state "$WORK/up$rep.duckdb" --json
  echo "requests again/treeshift $(sent dst)" >>"$WORK/rows"
  measure "again/rsync" rsync -a -e "ssh $ssh_opts" "$WORK/src/" "root@127.0.0.1:$served/rs/"
  measure "again/rclone" rclone copy "$WORK/src" "$rc_remote:$served/rc" --transfers "$TRANSFERS" --checkers "$TRANSFERS"
  measure "download/treeshift" "$bin" migrate "$ts" "$WORK/back-ts" --state "$WORK/down$rep.duckdb" --yes --json --workers "$TRANSFERS"
  echo "requests download/treeshift $(sent src)" >>"$WORK/rows"
  measure "download/rsync" rsync -a -e "ssh $ssh_opts" "root@127.0.0.1:$served/rs/" "$WORK/back-rs/"
  measure "download/rclone" rclone copy "$rc_remote:$served/rc" "$WORK/back-rc" --transfers "$TRANSFERS" --checkers "$TRANSFERS"
  same "$WORK/back-ts"; same "$WORK/back-rs"; same "$WORK/back-rc" "-r -t --omit-dir-times"
done

python3 - "$WORK/rows" <<'PY'
import statistics, sys
walls, rss, reqs = {}, {}, {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "requests":
        reqs.setdefault(parts[1], []).append(int(parts[2]))
        continue
    walls.setdefault(parts[0], []).append(float(parts[1]))
    rss.setdefault(parts[0], []).append(int(parts[2]))
print("| step | tool | median wall | vs rsync | peak RSS | SFTP requests |")
print("|---|---|---:|---:|---:|---:|")
for step in ["upload", "again", "download"]:
    base = statistics.median(walls[f"{step}/rsync"])
    for tool in ["rsync", "rclone", "treeshift"]:
        k = f"{step}/{tool}"
        w = statistics.median(walls[k])
        r = reqs.get(k)
        print(f"| {step} | {tool} | {w:.2f} s | {w / base:.2f}x | {max(rss[k]) // 1024} MiB | "
              f"{statistics.median(r) if r else ''} |")
PY

#!/usr/bin/env bash
# Full copies with everything a file server keeps, side by side in one run:
# `treeshift migrate --yes` (modes, owners, extended attributes, ACLs, hard
# links and holes kept: its defaults as root) next to `rsync -aHAX` (and
# `rsync -aHAXS`, which is what keeps holes) and `cp -a`, on S1 and S2 of
# the shared harness and on L: 10,000 hard-link pairs and a 10 GiB file
# that is nearly all holes. Every rep copies into an empty destination;
# the order of the tools turns each rep, and each run writes to a fresh
# ext4 file system (a loop-mounted image, made anew): on a file system
# that has seen many copies and deletions, rsync's and cp's system time
# was seen to grow run after run (rsync -aHAX on S1: 6.7, 42, 66 s), which
# says nothing about the tools. Every treeshift destination is
# checked with `rsync -aHAX -c -n -i --delete` (it must list nothing) and
# by its disk use against the source's.
#
#   bench/fidelity.sh                       # S1 S2 L, 3 reps
#   SCENARIOS="S1" REPS=1 bench/fidelity.sh
#
# Knobs: SCENARIOS [S1 S2 L], REPS [3], BENCH_DIR [/tmp/bench],
# TREESHIFT_BIN (else built). Needs rsync, python3, GNU time, root.
# Results: bench/results/fidelity-<date>.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/build.sh"
peers=${PEERS_DIR:-$repo/../shared/bench}
reps=${REPS:-3}
scenarios=${SCENARIOS:-S1 S2 L}
results=${RESULTS_DIR:-$here/results}
out=$results/fidelity-$(date +%Y%m%d-%H%M%S).txt
work=$BENCH_DIR/fidelity
mkdir -p "$results" "$work/log"
for tool in rsync python3 bc mkfs.ext4 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
say() { printf '%s\n' "$*" | tee -a "$out"; }

# make_tree NAME: the scenario's source under $work/NAME/src, made once.
make_tree() {
  local name=$1 dir=$work/$1 args
  case $name in
    S1) args="--files 100000 --fanout 8 --files-per-dir 25 --size-dist small --seed 1" ;;
    S2) args="--files 20000 --fanout 8 --files-per-dir 50 --size-dist mixed --seed 2" ;;
    L) args="links 10000 + sparse 10 GiB" ;;
    *) echo "unknown scenario $name" >&2; exit 1 ;;
  esac
  [ -f "$dir/.made" ] && [ "$(cat "$dir/.made")" = "$args" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir"
  if [ "$name" = L ]; then
    python3 - "$dir/src" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(100):
    a, b = os.path.join(root, f"a{d:02}"), os.path.join(root, f"b{d:02}")
    os.makedirs(a); os.makedirs(b)
    for i in range(100):
        p = os.path.join(a, f"f{i:03}")
        with open(p, "wb") as f:
            f.write(os.urandom(1024 + 37 * i))
        os.link(p, os.path.join(b, f"f{i:03}.link"))
with open(os.path.join(root, "disk.img"), "wb") as f:
    f.truncate(10 << 30)
    for at in range(0, 10 << 30, 1 << 30):
        f.seek(at)
        f.write(os.urandom(64 << 10))
EOF
  else
    python3 "$peers/gen_tree.py" --root "$dir/src" $args > /dev/null
  fi
  echo "$args" > "$dir/.made"
}

# The destination file system: an image on the same disk, big enough for
# L written without holes (rsync -aHAX) and for S2.
image=${FIDELITY_IMAGE:-/var/tmp/treeshift-fidelity.img}
mnt=$work/mnt
mkdir -p "$mnt"
fresh_fs() {
  mountpoint -q "$mnt" && umount "$mnt"
  truncate -s 16G "$image"
  mkfs.ext4 -q -F "$image"
  mount -o loop "$image" "$mnt"
}
trap 'mountpoint -q "$mnt" && umount "$mnt"; rm -f "$image"' EXIT

# timed ROW CMD...: one timed run into an empty $dst on a fresh file
# system; appends "ROW WALL WALL+SYNC RSS".
timed() {
  local row=$1; shift
  rm -f "$state" "$state.wal"
  fresh_fs; sync
  /usr/bin/time -f '%e %M' -o "$work/log/time" "$@" > "$work/log/out" 2> "$work/log/err" || {
    tail -5 "$work/log/err"; echo "$row failed: $*" >&2; exit 1
  }
  read -r wall kib < "$work/log/time"
  # Until the data is on disk: treeshift syncs before it records a batch as
  # copied; the others leave it to the page cache.
  local t0 t1
  t0=$(date +%s.%N); sync; t1=$(date +%s.%N)
  echo "$sc $row $wall $(echo "$wall + $t1 - $t0" | bc) $((kib / 1024))" >> "$work/log/samples"
}

: > "$out"
: > "$work/log/samples"
say "# bench/fidelity.sh $(date -u +%FT%TZ), $reps reps, scenarios: $scenarios"
say "treeshift: $bin ($(sha256sum "$bin" | cut -c1-12)), repo HEAD $(git -C "$repo" rev-parse --short HEAD)"
say "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at start; $(rsync --version | head -1)"
for sc in $scenarios; do
  make_tree "$sc"
  src=$work/$sc/src dst=$mnt/dst state=$work/$sc/s.duckdb
  say "$sc: $(find "$src" -type f | wc -l) files, $(du -sh --apparent-size "$src" | cut -f1) apparent, $(du -sh "$src" | cut -f1) on disk"
  find "$src" -type f -print0 | xargs -0 -r cat > /dev/null  # warm
  rows=("treeshift|$bin migrate $src $dst --state $state --yes --json"
        "rsync -aHAX|rsync -aHAX $src/ $dst/"
        "cp -a|cp -a $src/. $dst/")
  [ "$sc" = L ] && rows+=("rsync -aHAXS|rsync -aHAXS $src/ $dst/")
  for rep in $(seq 1 "$reps"); do
    n=${#rows[@]}
    for k in $(seq 0 $((n - 1))); do
      line=${rows[$(((k + rep) % n))]}
      # shellcheck disable=SC2086
      timed "${line%%|*}" ${line#*|}
      if [ "${line%%|*}" = treeshift ]; then
        left=$(rsync -aHAX -c -n -i --delete "$src/" "$dst/" | wc -l)
        echo "$sc rsync-check $left" >> "$work/log/samples"
        echo "$sc du $(du -sk "$src" | cut -f1) $(du -sk "$dst" | cut -f1)" >> "$work/log/samples"
      fi
    done
  done
  rm -f "$state" "$state.wal"
done
python3 - "$work/log/samples" <<'EOF' | tee -a "$out"
import statistics, sys
rows, checks, du = {}, {}, {}
for line in open(sys.argv[1]):
    parts = line.split()
    sc = parts[0]
    if parts[1] == "rsync-check":
        checks.setdefault(sc, []).append(int(parts[2]))
    elif parts[1] == "du":
        du[sc] = (int(parts[2]), int(parts[3]))
    else:
        wall, durable, rss = float(parts[-3]), float(parts[-2]), int(parts[-1])
        rows.setdefault(sc, {}).setdefault(" ".join(parts[1:-3]), []).append((wall, durable, rss))
print()
print("| scenario | tool | wall | vs rsync -aHAX | wall + sync | vs rsync -aHAX + sync | peak RSS | reps |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for sc, tools in rows.items():
    med = lambda v, i: statistics.median(x[i] for x in v)
    anchor = tools["rsync -aHAX"]
    for tool, v in tools.items():
        print(f"| {sc} | {tool} | {med(v, 0):.2f} s | {med(v, 0) / med(anchor, 0):.2f}x "
              f"| {med(v, 1):.2f} s | {med(v, 1) / med(anchor, 1):.2f}x | {max(x[2] for x in v)} MiB | {len(v)} |")
print()
for sc in rows:
    c, (s_kib, d_kib) = checks.get(sc, []), du.get(sc, (0, 0))
    print(f"{sc}: rsync -aHAX -c -n -i --delete listed {c} lines after each treeshift copy; "
          f"disk use {s_kib} KiB on the source, {d_kib} KiB on the destination")
EOF
say "results: $out"

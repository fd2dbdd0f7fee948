#!/usr/bin/env bash
# Delta pass vs fresh discovery on scenario S1 (100k files, 4k folders).
# Target: a delta pass after 1 % of the source changed costs <= 1.2x a fresh
# discovery, and its copy touches nothing but what changed.
#
#   bench/delta.sh                                   # 3 reps (medians)
#   REPS=5 bench/delta.sh
#   TREESHIFT_BIN=/tmp/ts-bench-bin bench/delta.sh   # no cargo build
#
# Steps: copy $BENCH_DIR/S1/src (never modified) to $BENCH_DIR/delta/src,
# `migrate --yes --policy overwrite` it into an empty dst (pass 1), then change
# 1 % of the source deterministically: every 100th file by sorted path; of
# those, a quarter get bytes appended (and a fixed mtime), a quarter only a new
# mtime (same size), a quarter are deleted, and next to each of the last
# quarter a new file is created (S1: 500 modified, 250 deleted, 250 new). No
# folder is added or removed. Then REPS times, alternating the order:
#   delta  `discover` on a `cp` of the pass-1 state file (this is pass 2);
#   fresh  `discover` of the same src vs the same dst into a new state file.
# Every run is checked (exit code, pass, change counts, files to copy). Warm
# page cache only (pass 1 just read both trees; nothing drops caches). Last,
# once: approve + copy the delta, check `copied` == new + modified, the source
# calls, and that dst == src except the deleted files (still on dst as extras).
#
# Knobs: REPS [3], BENCH_DIR [/tmp/bench], SCENARIO_DIR [$BENCH_DIR/S1],
# S1_GEN [S1's gen_tree.py args, used when $SCENARIO_DIR/src is absent],
# WORK [$BENCH_DIR/delta], RESULTS_DIR [bench/results], RUN_ID [date],
# KEEP_TREES [0] (1 keeps the trees and state files; logs are always kept), PEERS_DIR [../shared/bench] (treecmp.py).
# Results: $RESULTS_DIR/delta-$RUN_ID.txt. Exit 1 if any check fails; the
# time target is reported (met / NOT met) but does not change the exit code.
# Needs: python3, GNU time (/usr/bin/time).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/build.sh"
REPS=${REPS:-3}
name=delta
source "$here/s1_lib.sh"
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
cpstate() { rm -f "$2" "$2.wal"; cp "$1" "$2"; [ ! -f "$1.wal" ] || cp "$1.wal" "$2.wal"; }

header "warm page cache only"
copy_source
src=$work/src dst=$work/dst

# --- pass 1: everything into an empty destination ----------------------------
say ""
say "## pass 1: migrate into an empty dst"
timed pass1 0 "$bin" migrate "$src" "$dst" --state "$work/pass1.duckdb" --yes --policy overwrite --json
say "migrate: ${WALL} s, ${RSS} MiB, copied $(jget "$work/log/pass1.json" copy.copied), exit 0"
check "pass 1 copy.failed" "$(jget "$work/log/pass1.json" copy.failed)" 0
check "pass 1 discovery.failed" "$(jget "$work/log/pass1.json" discovery.failed)" 0

# --- change 1 % of the source -------------------------------------------------
python3 - "$src" "$work/changes.json" <<'PY' | tee -a "$out"
import json, os, sys
root, manifest = sys.argv[1], sys.argv[2]
files = sorted(os.path.relpath(os.path.join(cur, f), root)
               for cur, _, names in os.walk(root) for f in names)
chosen = files[99::100]                  # every 100th file by sorted path
T_APPEND, T_TOUCH, T_NEW = 1717243200, 1717329600, 1717416000  # 2024-06-01..03, outside S1's mtimes
ch = {"files_before": len(files), "appended": [], "touched": [], "deleted": [], "new": []}
for k, rel in enumerate(chosen):
    p = os.path.join(root, rel)
    kind = k % 4
    if kind == 0:                        # bytes appended, fixed mtime
        with open(p, "ab") as f:
            f.write(b"treeshift delta bench %d\n" % k)
        os.utime(p, (T_APPEND, T_APPEND))
        ch["appended"].append(rel)
    elif kind == 1:                      # same size, only the mtime changes
        os.utime(p, (T_TOUCH, T_TOUCH))
        ch["touched"].append(rel)
    elif kind == 2:
        os.unlink(p)
        ch["deleted"].append(rel)
    else:                                # a new file in the same folder
        d, b = os.path.split(rel)
        new = os.path.join(d, "new-" + b)
        np_ = os.path.join(root, new)
        assert not os.path.exists(np_), new
        with open(np_, "wb") as f:
            f.write(bytes((k * 7 + i) % 251 for i in range(512 + 37 * k % 4096)))
        os.utime(np_, (T_NEW, T_NEW))
        ch["new"].append(new)
json.dump(ch, open(manifest, "w"), indent=0)
print(f"{len(chosen)} of {len(files)} files chosen: {len(ch['appended'])} appended, "
      f"{len(ch['touched'])} mtime only, {len(ch['deleted'])} deleted, {len(ch['new'])} new")
PY
n_mod=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(len(c["appended"])+len(c["touched"]))' "$work/changes.json")
n_del=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["deleted"]))' "$work/changes.json")
n_new=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["new"]))' "$work/changes.json")
n_copy=$((n_mod + n_new))
say ""
say "## source changed: modified $n_mod (half appended, half mtime only), deleted $n_del, new $n_new -> $n_copy files to copy"
ref=$(python3 "$treecmp" "$src" "$dst" || true)
say "treecmp.py src dst before the delta: $ref"
check "treecmp to_copy" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["to_copy"])' "$ref")" "$n_copy"

# --- timed reps -----------------------------------------------------------------
run_delta() {  # rep
  cpstate "$work/pass1.duckdb" "$work/delta.duckdb"
  timed "delta-$1" 0 "$bin" discover "$src" "$dst" --state "$work/delta.duckdb" --json
  local j=$work/log/delta-$1.json
  d_wall[$1]=$WALL d_rss[$1]=$RSS d_tot[$1]=$(printf %.2f "$(jget "$j" timing.total_s)")
  d_calls[$1]="src list $(jget "$j" calls.src.list) stat $(jget "$j" calls.src.stat) read $(jget "$j" calls.src.read), dst list $(jget "$j" calls.dst.list) stat $(jget "$j" calls.dst.stat) read $(jget "$j" calls.dst.read)"
  check "rep $1 delta pass" "$(jget "$j" pass)" 2
  check "rep $1 delta changes new/modified/deleted" \
    "$(jget "$j" changes.new)/$(jget "$j" changes.modified)/$(jget "$j" changes.deleted)" "$n_new/$n_mod/$n_del"
  check "rep $1 delta to_copy files/folders" "$(jget "$j" to_copy.files)/$(jget "$j" to_copy.folders)" "$n_copy/0"
}
run_fresh() {  # rep
  rm -f "$work/fresh.duckdb" "$work/fresh.duckdb.wal"
  timed "fresh-$1" 0 "$bin" discover "$src" "$dst" --state "$work/fresh.duckdb" --json
  local j=$work/log/fresh-$1.json
  f_wall[$1]=$WALL f_rss[$1]=$RSS f_tot[$1]=$(printf %.2f "$(jget "$j" timing.total_s)")
  check "rep $1 fresh pass" "$(jget "$j" pass)" 1
  # A fresh discovery finds the modified files (and the folders whose
  # mtime changed) as differs, which the default approval leaves alone;
  # the delta pass finds the same items outdated.
  check "rep $1 fresh missing" "$(jget "$j" missing)" "$n_new"
  check "rep $1 fresh extra" "$(jget "$j" extra)" "$n_del"
}
declare -a d_wall d_rss d_tot f_wall f_rss f_tot d_calls order busy_n
say ""
say "## $REPS reps, alternating order (warm cache)"
for ((r = 1; r <= REPS; r++)); do
  busy_n[$r]=$(ncomp)
  if ((r % 2)); then order[$r]="delta,fresh"; run_delta "$r"; run_fresh "$r"
  else order[$r]="fresh,delta"; run_fresh "$r"; run_delta "$r"; fi
  check "rep $r fresh differs == the delta's outdated" \
    "$(jget "$work/log/fresh-$r.json" differs)" "$(jget "$work/log/delta-$r.json" outdated)"
done

say ""
say "| rep | order | compilers running | fresh s | fresh timing.total_s | fresh RSS MiB | delta s | delta timing.total_s | delta RSS MiB | delta/fresh |"
say "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for ((r = 1; r <= REPS; r++)); do
  say "| $r | ${order[$r]} | ${busy_n[$r]} | ${f_wall[$r]} | ${f_tot[$r]} | ${f_rss[$r]} | ${d_wall[$r]} | ${d_tot[$r]} | ${d_rss[$r]} | $(awk -v a="${d_wall[$r]}" -v b="${f_wall[$r]}" 'BEGIN {printf "%.2f", a/b}') |"
done
fm=$(printf '%s\n' "${f_wall[@]}" | median); dm=$(printf '%s\n' "${d_wall[@]}" | median)
ftm=$(printf '%s\n' "${f_tot[@]}" | median); dtm=$(printf '%s\n' "${d_tot[@]}" | median)
frm=$(printf '%s\n' "${f_rss[@]}" | median); drm=$(printf '%s\n' "${d_rss[@]}" | median)
ratio=$(awk -v a="$dm" -v b="$fm" 'BEGIN {printf "%.2f", a/b}')
say "| **median** | | | **$fm** | $ftm | $frm | **$dm** | $dtm | $drm | **$ratio** |"
say ""
say "s = wall time of the process (/usr/bin/time); timing.total_s = the discovery's own clock from its --json (no process start, state open or pass setup)."
say ""
say "changes found by every delta pass: new $n_new, modified $n_mod, deleted $n_del (to copy: $n_copy files, 0 folders)"
say "backend calls of the last delta pass: ${d_calls[$REPS]}"
if awk -v r="$ratio" 'BEGIN {exit !(r <= 1.2)}'; then
  say "target delta <= 1.2x fresh discovery: met ($ratio)"
else
  say "target delta <= 1.2x fresh discovery: NOT met ($ratio)"
fi

# --- once: approve + copy the delta, then compare the trees ---------------------
say ""
say "## copy of the delta (state of the last delta rep)"
timed approve 0 "$bin" approve --state "$work/delta.duckdb" --policy overwrite --json
check "approved files/folders" "$(jget "$work/log/approve.json" files)/$(jget "$work/log/approve.json" folders)" "$n_copy/0"
timed copy 0 "$bin" copy --state "$work/delta.duckdb" --json
cj=$work/log/copy.json
say "copy: ${WALL} s, ${RSS} MiB, exit 0; calls src list $(jget "$cj" calls.src.list) read $(jget "$cj" calls.src.read), dst stat $(jget "$cj" calls.dst.stat) write $(jget "$cj" calls.dst.write)"
# The plan's items: the files, and the folders whose mtime changed (their
# metadata is set in place, reading the source folder's extended attributes).
items=$(jget "$work/log/approve.json" items)
check "copy.copied (the approved items)" "$(jget "$cj" copied)" "$items"
check "copy.failed" "$(jget "$cj" failed)" 0
check "copy calls.src.read (each approved item read once on src)" "$(jget "$cj" calls.src.read)" "$items"
check "copy calls.src.list" "$(jget "$cj" calls.src.list)" 0
cmp=$(python3 "$treecmp" "$src" "$dst" --content || true)
say "treecmp.py --content src dst: $cmp"
check "treecmp missing/differ/extra" \
  "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%d/%d/%d" % (r["missing"], r["differ"], r["extra"]))' "$cmp")" "0/0/$n_del"
extras=$(python3 - "$src" "$dst" "$work/changes.json" <<'PY'
import json, os, sys
def files(root):
    return {os.path.relpath(os.path.join(c, f), root) for c, _, n in os.walk(root) for f in n}
s, d = files(sys.argv[1]), files(sys.argv[2])
print("same" if d - s == set(json.load(open(sys.argv[3]))["deleted"]) else "different")
PY
)
check "dst extras are exactly the files deleted on src" "$extras" same

say ""
say "load at end: $(cut -d' ' -f1-3 /proc/loadavg), $(busy); logs in $work/log"
[ "${KEEP_TREES:-0}" = 1 ] || rm -rf "$work/src" "$work/dst" "$work"/*.duckdb*
if ((failures)); then say "RESULT: $failures check(s) FAILED"; exit 1; fi
say "RESULT: all checks passed"

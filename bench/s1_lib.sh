# Sourced by delta.sh and retry.sh after build.sh, with $name set (delta or
# retry): their settings and result file, the helpers both use, the run's
# header, and a private copy of scenario S1's source to change.
scen=${SCENARIO_DIR:-$BENCH_DIR/S1}
work=${WORK:-$BENCH_DIR/$name}
results=${RESULTS_DIR:-$here/results}
run_id=${RUN_ID:-$(date +%Y%m%d)}
out=$results/$name-$run_id.txt
peers=${PEERS_DIR:-$repo/../shared/bench}
treecmp=$peers/treecmp.py
export LC_ALL=C

[ -f "$treecmp" ] || { echo "treecmp.py not found at $treecmp (set PEERS_DIR)" >&2; exit 1; }
# S1's source as the shared harness generates it, if $scen/src is not there
s1_gen=${S1_GEN:-"--files 100000 --fanout 8 --files-per-dir 25 --size-dist small --seed 1"}
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
mkdir -p "$results"
: > "$out"
say() { printf '%s\n' "$*" | tee -a "$out"; }
die() { say "FATAL: $*"; exit 1; }
failures=0
check() {  # label got want
  if [ "$2" = "$3" ]; then say "  ok    $1: $2"
  else say "  FAIL  $1: got $2, want $3"; failures=$((failures + 1)); fi
}
jget() {  # file dotted.key
  python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"
}
# timed NAME WANT_RC CMD...: runs CMD under /usr/bin/time, stdout to
# $work/log/NAME.json, stderr to NAME.err; sets WALL (s) and RSS (MiB); stops
# the script when the exit code is not WANT_RC.
timed() {
  local name=$1 want=$2 rc=0; shift 2
  /usr/bin/time -f '%e %M' -o "$work/log/$name.time" "$@" \
    > "$work/log/$name.json" 2> "$work/log/$name.err" || rc=$?
  if [ "$rc" != "$want" ]; then
    tail -5 "$work/log/$name.err" | tee -a "$out"
    die "$name: exit code $rc, expected $want ($*)"
  fi
  read -r WALL rss_kib < <(tail -1 "$work/log/$name.time")
  RSS=$((rss_kib / 1024))
}
ncomp() { ps -eo comm= | grep -cxE 'cargo|rustc|cc|cc1plus|c\+\+|ld' || true; }
busy() { echo "$(ncomp) compiler processes running"; }

# header CACHE-NOTE [SCENARIO-NOTE]: what ran where, at the top of the results.
header() {
  say "# bench/$name.sh run $run_id ($(date -u +%FT%TZ))"
  local ver sha head
  ver=$("$bin" --version 2>/dev/null) || ver='?'
  sha=$(sha256sum "$bin" | cut -c1-12)
  head=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
  if [ -n "${TREESHIFT_BIN:-}" ]; then head="$head (binary from TREESHIFT_BIN, not built here: may not match)"; fi
  say "binary: $bin ($ver, sha256 $sha..., modified $(date -u -r "$bin" +%FT%TZ)); repo HEAD $head"
  say "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) and $(busy) at start; $1"
  say "scenario: $scen/src (copied, or generated if absent, to $work/src)${2:-}"
}

# A fresh $work with logs and $work/src, a copy of S1's source (S1 itself is
# never changed).
copy_source() {
  rm -rf "$work"; mkdir -p "$work/log"
  if [ -d "$scen/src" ]; then cp -a "$scen/src" "$work/src"
  else say "no $scen/src: generating S1's source ($s1_gen)"; python3 "$peers/gen_tree.py" --root "$work/src" $s1_gen > /dev/null; fi
}

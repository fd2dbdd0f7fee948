#!/usr/bin/env bash
# What does a change cost? Two treeshift builds side by side on scenario S1,
# in one run, with rsync as the anchor: warm `discover` against S1's
# partial destination (next to `rsync -a -n`) and a full `migrate` into an
# empty destination (next to `rsync -a`). Each repetition runs every row
# once, the order of A and B alternating, so drift of the machine hits both;
# the table has medians and peak RSS.
#
#   A_BIN=/var/tmp/ts-bin-old B_BIN=/var/tmp/ts-bin-new bench/ab.sh
#   REPS=7 A_BIN=... B_BIN=... bench/ab.sh
#
# Knobs: REPS [5], BENCH_DIR [/tmp/bench], S1_GEN, MUTATE_ARGS (as the
# shared harness), A_LABEL/B_LABEL. Needs rsync, python3, GNU time.
# Results: bench/results/ab-<date>.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
a=${A_BIN:?set A_BIN to the first treeshift binary}
b=${B_BIN:?set B_BIN to the second treeshift binary}
a_label=${A_LABEL:-A} b_label=${B_LABEL:-B}
reps=${REPS:-5}
bench=${BENCH_DIR:-/tmp/bench}
peers=${PEERS_DIR:-$repo/../shared/bench}
s1_gen=${S1_GEN:-"--files 100000 --fanout 8 --files-per-dir 25 --size-dist small --seed 1"}
mutate=${MUTATE_ARGS:-"--seed 101 --delete-dirs-pct 5 --delete-pct 25 --modify-pct 5 --add-pct 2"}
results=${RESULTS_DIR:-$here/results}
out=$results/ab-$(date +%Y%m%d-%H%M%S).txt
work=$bench/ab
mkdir -p "$results" "$work/log"
for tool in rsync python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

# S1: the shared harness's source and partial destination, made once.
src=$work/src partial=$work/partial
if [ ! -f "$work/.made" ] || [ "$(cat "$work/.made")" != "$s1_gen | $mutate" ]; then
  rm -rf "$src" "$partial"
  python3 "$peers/gen_tree.py" --root "$src" $s1_gen > /dev/null
  cp -a "$src" "$partial"
  python3 "$peers/gen_tree.py" --mutate "$partial" $mutate > /dev/null
  echo "$s1_gen | $mutate" > "$work/.made"
fi

say() { printf '%s\n' "$*" | tee -a "$out"; }
# timed ROW CMD...: one timed run; appends "ROW WALL RSS_MIB" to the samples.
timed() {
  local row=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/log/time" "$@" > "$work/log/out" 2> "$work/log/err" || {
    local rc=$?
    [ "$rc" = 4 ] || { tail -5 "$work/log/err"; echo "$row failed ($rc): $*" >&2; exit 1; }
  }
  read -r wall kib < "$work/log/time"
  echo "$row $wall $((kib / 1024))" >> "$work/log/samples"
}
fresh() { rm -rf "$work/dst" "$work/s.duckdb" "$work/s.duckdb.wal"; }

: > "$out"
: > "$work/log/samples"
say "# bench/ab.sh $(date -u +%FT%TZ), $reps reps, S1 ($s1_gen)"
say "A ($a_label): $a ($(sha256sum "$a" | cut -c1-12))"
say "B ($b_label): $b ($(sha256sum "$b" | cut -c1-12))"
say "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at start"
for tool in "$a" "$b"; do  # warm the page cache and both binaries
  fresh; "$tool" discover "$src" "$partial" --state "$work/s.duckdb" > /dev/null 2>&1 || true
done
for rep in $(seq 1 "$reps"); do
  order=("A:$a" "B:$b")
  [ $((rep % 2)) = 0 ] && order=("B:$b" "A:$a")
  timed rsync-n rsync -a -n --delete "$src/" "$partial/"
  for pair in "${order[@]}"; do
    fresh; timed "discover-${pair%%:*}" "${pair#*:}" discover "$src" "$partial" --state "$work/s.duckdb" --json
  done
  fresh; timed rsync-a rsync -a "$src/" "$work/dst/"
  for pair in "${order[@]}"; do
    fresh; timed "migrate-${pair%%:*}" "${pair#*:}" migrate "$src" "$work/dst" --state "$work/s.duckdb" --yes --json
  done
done
fresh
python3 - "$work/log/samples" "$a_label" "$b_label" <<'EOF' | tee -a "$out"
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, wall, rss = line.split()
    rows.setdefault(row, []).append((float(wall), int(rss)))
med = {r: statistics.median(w for w, _ in v) for r, v in rows.items()}
rss = {r: max(m for _, m in v) for r, v in rows.items()}
a, b = sys.argv[2], sys.argv[3]
print()
print("| row | median wall | vs rsync | peak RSS | runs |")
print("|---|---:|---:|---:|---:|")
for r, anchor in [("rsync-n", None), ("discover-A", "rsync-n"), ("discover-B", "rsync-n"),
                  ("rsync-a", None), ("migrate-A", "rsync-a"), ("migrate-B", "rsync-a")]:
    label = r.replace("-A", f" ({a})").replace("-B", f" ({b})")
    ratio = f"{med[r] / med[anchor]:.2f}x" if anchor else ""
    print(f"| {label} | {med[r]:.2f} s | {ratio} | {rss[r]} MiB | {len(rows[r])} |")
print()
for kind in ("discover", "migrate"):
    print(f"{kind}: B / A = {med[kind + '-B'] / med[kind + '-A']:.3f}")
EOF
say "results: $out"

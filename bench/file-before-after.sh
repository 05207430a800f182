#!/bin/sh
# File-transfer goodput before and after the issue-9 changes, side by side in one run:
# mesh/benches/file_throughput.rs built twice (the same bench source), once against the mesh
# code of BEFORE_REF and once against the working tree, run alternately round by round, each
# run in its own loopback-only network namespace. Every run measures the raw data channel
# too, so each file figure has a same-process raw reference.
#
#   bench/file-before-after.sh [MiB per transfer] [rounds]     (default 128 MiB, 3 rounds)
#
# BEFORE_REF (default 2e067fc, the last commit before this work) is checked out into a
# temporary git worktree and built there with CARGO_TARGET_DIR=$BEFORE_TARGET_DIR (default
# target/transfer-before; pointing it at the "after" target dir reuses the compiled
# dependencies); BEFORE_BIN=path skips that. AFTER_EXTRA adds
# options to the "after" runs (default `--fast=64k/16m`: the new code with the old frame
# size, to separate the frame size from the other changes). Steps are bounded
# (BENCH_STEP_TIMEOUT_S, default 900 s). Needs root and `ip` for `unshare -n`.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MIB=${1:-128}
ROUNDS=${2:-3}
STEP=${BENCH_STEP_TIMEOUT_S:-900}
BEFORE_REF=${BEFORE_REF:-2e067fc}
AFTER_EXTRA=${AFTER_EXTRA:---fast=64k/16m}

bench_bin() { # $1: workspace dir, $2: target dir
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench -p ghostmesh --bench file_throughput --no-run \
    --message-format=json 2>/dev/null) | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1
}

if [ -z "${BEFORE_BIN:-}" ]; then
  WT=$(mktemp -d /tmp/ghostmesh-before.XXXXXX)
  trap 'git -C "$ROOT" worktree remove --force "$WT" >/dev/null 2>&1 || true' EXIT
  git worktree add --detach "$WT" "$BEFORE_REF" >/dev/null 2>&1
  # The same bench source on both sides; only the mesh code differs.
  cp mesh/benches/file_throughput.rs "$WT/mesh/benches/file_throughput.rs"
  echo "building the 'before' bench ($BEFORE_REF) ..." >&2
  BEFORE_BIN=$(bench_bin "$WT" "${BEFORE_TARGET_DIR:-$ROOT/target/transfer-before}")
fi
echo "building the 'after' bench (working tree) ..." >&2
AFTER_BIN=$(bench_bin "$ROOT" "${CARGO_TARGET_DIR:-$ROOT/target}")
for b in "$BEFORE_BIN" "$AFTER_BIN"; do
  [ -x "$b" ] || { echo "file-before-after.sh: no bench executable ($b); run the cargo command for errors" >&2; exit 1; }
done

in_ns() { timeout "$STEP" unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"; }

OUT=$(mktemp)
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $MIB MiB per transfer, $ROUNDS round(s)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for side in before after; do
    if [ $((r % 2)) -eq 0 ]; then side=$([ "$side" = before ] && echo after || echo before); fi
    if [ "$side" = before ]; then
      echo "== round $r, before ($BEFORE_REF)"
      in_ns "$BEFORE_BIN" "$MIB" 1 | grep '^round' | sed 's/^/before /' | tee -a "$OUT"
    else
      echo "== round $r, after (working tree) $AFTER_EXTRA"
      # shellcheck disable=SC2086
      in_ns "$AFTER_BIN" "$MIB" 1 $AFTER_EXTRA | grep '^round' | sed 's/^/after /' | tee -a "$OUT"
    fi
  done
  r=$((r + 1))
done

# Medians per (side, case): MB/s, MB per CPU-second, and both as % of the same run's raw case.
echo
awk '
function median(list,    n, a, i, j, t) {
  n = split(list, a, ",")
  for (i = 2; i <= n; i++) { t = a[i] + 0; j = i - 1; while (j >= 1 && a[j] + 0 > t) { a[j + 1] = a[j]; j-- } a[j + 1] = t }
  return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(key, v) { if (key in vals) vals[key] = vals[key] "," v; else vals[key] = v }
{
  side = $1
  line = $0; sub(/^[a-z]+ round [0-9]+: */, "", line)
  nseg = split(line, segs, ";")
  for (k = 1; k <= nseg; k++) {
    n = split(segs[k], w, " ")
    if (n < 8) continue
    name = w[1]; for (i = 2; i <= n - 7; i++) name = name " " w[i]
    key = side " | " name
    if (!(key in seen)) { seen[key] = 1; order[++count] = key }
    p1 = w[n - 2]; gsub(/[(%]/, "", p1); p2 = w[n]; gsub(/[%)]/, "", p2)
    add(key SUBSEP "mbs", w[n - 6]); add(key SUBSEP "eff", w[n - 4]); add(key SUBSEP "p1", p1); add(key SUBSEP "p2", p2)
  }
}
END {
  printf "| %-28s | %8s | %9s | %10s | %14s |\n", "side | case (medians)", "MB/s", "MB/CPU-s", "MB/s / raw", "MB/CPU-s / raw"
  printf "|------------------------------|----------|-----------|------------|----------------|\n"
  for (c = 1; c <= count; c++) {
    k = order[c]
    printf "| %-28s | %8.1f | %9.1f | %9.0f%% | %13.0f%% |\n", k, median(vals[k, "mbs"]), median(vals[k, "eff"]), median(vals[k, "p1"]), median(vals[k, "p2"])
  }
}' "$OUT"
rm -f "$OUT"

#!/bin/sh
# Rust (webrtc-rs, this crate's WebRTC link) against the JavaScript baseline (@roamhq/wrtc, i.e.
# libwebrtc, in Node) on this machine, side by side: one reliable ordered data channel between
# two peers in one process on loopback, connect time and MB/s with 16 KiB and 64 KiB messages.
#
#   bench/transfer-vs-node.sh [MiB per case] [rounds]        (default 64 MiB, 3 rounds)
#
# Each round runs the Rust bench (mesh/benches/webrtc_throughput.rs --compact) and the Node
# baseline (interop/wrtc-throughput.mjs, both peers in one process as in the Rust bench, then
# one process per peer), alternating which side goes first, each in its own loopback-only
# network namespace (`unshare -n`; needs root and `ip`). Ratios are Rust over the better of
# the two Node runs of the same round (the machine is shared: load drifts between rounds),
# then the median over rounds is shown. Every step is bounded (BENCH_STEP_TIMEOUT_S, default
# 600 s).
#
# Needs: cargo, node >= 18 with `cd interop && npm ci` done once, unshare, ip, root.
set -eu
cd "$(dirname "$0")/.."
MIB=${1:-64}
ROUNDS=${2:-3}
STEP=${BENCH_STEP_TIMEOUT_S:-600}

for tool in cargo node unshare ip timeout awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "transfer-vs-node.sh: '$tool' not found" >&2; exit 127; }
done
[ -d interop/node_modules/@roamhq/wrtc ] || {
  echo "transfer-vs-node.sh: interop/node_modules/@roamhq/wrtc missing: run (cd interop && npm ci)" >&2
  exit 1
}

echo "building the Rust bench (cargo bench --no-run, release profile) ..." >&2
BIN=$(cargo bench -p ghostmesh --bench webrtc_throughput --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$BIN" ] || { echo "transfer-vs-node.sh: bench executable not found (run the cargo command above for errors)" >&2; exit 1; }

# Runs "$@" in a fresh network namespace holding only lo, bounded in time.
in_ns() {
  timeout "$STEP" unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
}

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run_rust() { in_ns "$BIN" --compact "$MIB" 1 | grep '^rust ' | sed "s/^/$1 /" >>"$OUT"; }
run_node() {
  in_ns node interop/wrtc-throughput.mjs "$MIB" 1 2>/dev/null | grep '^node ' | sed "s/^/$1 /" >>"$OUT"
  in_ns node interop/wrtc-throughput.mjs "$MIB" 1 --two-processes 2>/dev/null | grep '^node2 ' | sed "s/^/$1 /" >>"$OUT"
}

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $MIB MiB per case, $ROUNDS round(s)" >&2
r=1
while [ "$r" -le "$ROUNDS" ]; do
  echo "round $r/$ROUNDS ..." >&2
  if [ $((r % 2)) -eq 1 ]; then run_rust "$r"; run_node "$r"; else run_node "$r"; run_rust "$r"; fi
  r=$((r + 1))
done

echo
echo "Raw lines (round, side, medians of that round):"
sed 's/ [a-z0-9_]*_all=[^ ]*//g' "$OUT"
echo

awk -v rounds="$ROUNDS" -v mib="$MIB" '
function median(list,    n, a, i, j, t) {
  n = split(list, a, ",")
  if (n == 0) return 0
  for (i = 2; i <= n; i++) { t = a[i] + 0; j = i - 1; while (j >= 1 && a[j] + 0 > t) { a[j + 1] = a[j]; j-- } a[j + 1] = t }
  return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(key, v) { if (key in vals) vals[key] = vals[key] "," v; else vals[key] = v }
{
  round = $1; side = $2
  for (i = 3; i <= NF; i++) {
    split($i, kv, "="); if (kv[1] ~ /_all$/) continue
    val[round, side, kv[1]] = kv[2]; add(side SUBSEP kv[1], kv[2])
  }
}
# The better Node figure of round r: higher MB/s, lower connect time.
function best(r, key, higher,    x, y) {
  x = ((r, "node", key) in val) ? val[r, "node", key] + 0 : -1
  y = ((r, "node2", key) in val) ? val[r, "node2", key] + 0 : -1
  if (x < 0) return y
  if (y < 0) return x
  return higher ? (x > y ? x : y) : (x < y ? x : y)
}
function row(label, rkey, nkey, target, higher,    r, ratios, b, rm, ratio, met) {
  ratios = ""
  for (r = 1; r <= rounds; r++) {
    b = best(r, nkey, higher)
    if (!((r, "rust", rkey) in val) || b <= 0) continue
    ratio = sprintf("%.2f", val[r, "rust", rkey] / b)
    ratios = (ratios == "") ? ratio : ratios "," ratio
  }
  rm = median(vals["rust", rkey])
  met = ""
  if (target != "") met = (higher ? rm >= target + 0 : rm <= target + 0) ? "yes" : "no"
  printf "| %-44s | %7.1f | %7.1f | %7.1f | %-19s | %6.2f | %-7s | %-3s |\n", label, rm, median(vals["node", nkey]), median(vals["node2", nkey]), ratios, median(ratios), target == "" ? "" : (higher ? ">= " : "<= ") target, met
}
END {
  printf "Rust (webrtc-rs link, this crate) vs Node (@roamhq/wrtc 0.10, libwebrtc): medians over %d round(s), %d MiB per case.\n", rounds, mib
  printf "Node 1p: both peers in one process (like the Rust bench); Node 2p: one process per peer. Ratio: Rust / better Node, same round.\n\n"
  printf "| %-44s | %7s | %7s | %7s | %-19s | %6s | %-7s | %-3s |\n", "case", "Rust", "Node 1p", "Node 2p", "Rust/Node per round", "median", "target", "met"
  printf "|%s|%s|%s|%s|%s|%s|%s|%s|\n", "----------------------------------------------", "---------", "---------", "---------", "---------------------", "--------", "---------", "-----"
  row("connect, ms (create offer -> both open)", "connect_ms", "connect_ms", 150, 0)
  row("16 KiB messages, MB/s", "mbs_16k", "mbs_16k", 400, 1)
  row("64 KiB messages, MB/s", "mbs_64k", "mbs_64k", "", 1)
  row("16 KiB, MB/s, Rust sctp_mtu 16384 (loopback)", "mbs_16k_mtu16k", "mbs_16k", 400, 1)
  row("64 KiB, MB/s, Rust sctp_mtu 16384 (loopback)", "mbs_64k_mtu16k", "mbs_64k", "", 1)
  row("16 KiB, MB per CPU-second (both peers)", "cpu_16k", "cpu_16k", "", 1)
  row("64 KiB, MB per CPU-second (both peers)", "cpu_64k", "cpu_64k", "", 1)
  printf "\nTargets: >= 400 MB/s at 16 KiB, Rust/Node >= 1.5 for MB/s, connect <= 150 ms (for connect, Rust/Node < 1 is faster).\n"
}' "$OUT"

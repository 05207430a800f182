#!/usr/bin/env bash
# Resident memory per idle WebSocket connection of the tracker, measured by
# `ghostmesh-harness bench tracker --idle` (RSS of the tracker process before connecting and with
# every connection open, over the connection count), on 127.0.0.1 only.
#
#   bench/idle-memory.sh [N ...]                 (default: 10000 19000)
#   OTHER_BIN=/path/to/ghostmesh-tracker bench/idle-memory.sh 10000
#
# OTHER_BIN measures a second tracker binary (e.g. an older build) in the same run, alternating
# with this tree's, so the two figures compare side by side. Every count is bounded by the open
# files limit: the tracker and the load generator each hold N sockets, so N must stay below
# `ulimit -Hn` (this script raises the soft limit to the hard one; beyond 20000 connections the
# generator spreads them over 127.0.0.1, 127.0.0.2, ... itself).
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(10000 19000)
cargo build --release -q -p ghostmesh-tracker -p ghostmesh-harness
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
port=18555
bins=("$PWD/target/release/ghostmesh-tracker")
names=("this tree")
if [ -n "${OTHER_BIN:-}" ]; then
  bins+=("$OTHER_BIN")
  names+=("$OTHER_BIN")
fi

tracker=""
stop() { [ -n "$tracker" ] && kill "$tracker" 2>/dev/null && wait "$tracker" 2>/dev/null; tracker=""; }
trap stop EXIT

echo "open files limit: $limit; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s  %-40s  %s\n' connections tracker "bytes per idle connection"
for n in "${counts[@]}"; do
  if [ "$n" -ge $((limit - 100)) ]; then
    echo "skipping $n connections: the open files limit is $limit (raise the hard limit: ulimit -Hn)" >&2
    continue
  fi
  for i in "${!bins[@]}"; do
    "${bins[$i]}" --listen 127.0.0.1:$port --log-level warn \
      --max-connections $((n + 10)) --max-connections-per-ip $((n + 10)) >/dev/null 2>&1 &
    tracker=$!
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    per=$(timeout 300 ./target/release/ghostmesh-harness bench tracker --idle \
      --url ws://127.0.0.1:$port --tracker-pid "$tracker" --connections "$n" --duration 3 |
      sed -n 's/.*memory per idle connection: \([0-9]*\) bytes.*/\1/p')
    stop
    printf '%-10s  %-40s  %s\n' "$n" "${names[$i]}" "${per:-failed}"
  done
done

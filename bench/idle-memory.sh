#!/usr/bin/env bash
# Resident memory per idle WebSocket connection of the tracker: RSS before and after N idle
# connections (Node `ws` clients from interop/), on 127.0.0.1 only, bounded by N and a 20 s
# connect deadline. Usage: bench/idle-memory.sh [N]   (default 3000; needs `ulimit -n` > N)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
port=18555
[ -d interop/node_modules ] || (cd interop && npm ci --no-audit --no-fund)
cargo build --release -q -p ghostmesh-tracker
ulimit -n $((n * 2 + 1024)) 2>/dev/null || true
./target/release/ghostmesh-tracker --listen 127.0.0.1:$port --log-level warn \
  --max-connections-per-ip $((n + 10)) --max-connections $((n + 10)) >/dev/null &
tracker=$!
trap 'kill $tracker 2>/dev/null || true' EXIT
sleep 0.5
before=$(awk '/VmRSS/{print $2}' /proc/$tracker/status)
(cd interop && node idle-connections.mjs ws://127.0.0.1:$port "$n") &
clients=$!
sleep 2.5
after=$(awk '/VmRSS/{print $2}' /proc/$tracker/status)
wait $clients
echo "connections: $n  rss before: ${before} kB  with idle connections: ${after} kB  per connection: $(( (after - before) * 1024 / n )) bytes"

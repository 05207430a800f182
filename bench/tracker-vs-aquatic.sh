#!/usr/bin/env bash
# Tracker load, side by side: aquatic_ws (the fastest WebTorrent tracker) and ghostmesh-tracker,
# loaded in turn by aquatic's own load tester (aquatic_ws_load_test, TLS) and by
# `ghostmesh-harness bench tracker`, with the same cores and the same protocol settings.
#
#   bench/tracker-vs-aquatic.sh            # 2 rounds x (aquatic, ours) x (both load generators)
#   ROUNDS=1 DURATION=20 CONNS=64 bench/tracker-vs-aquatic.sh
#
# Environment (every value is bounded):
#   DURATION  measured seconds per run (default 30, at most 45; a run is WARMUP + DURATION <= 60 s)
#   WARMUP    seconds before measuring (default 10, a multiple of 5, at most 15)
#   CONNS     aquatic_ws_load_test connections (num_connections_per_worker; default 64, <= 4096)
#   ROUNDS    rounds of every run, alternating the trackers (default 2, at most 5)
#   TRACKER_CPUS / LOAD_CPUS  taskset CPU lists (default: tracker on CPU 1, load on CPU 0)
#   OUT       directory for logs and JSON (default: a new directory under bench/.tools/runs)
#
# Tools go into bench/.tools (gitignored): `cargo install --locked aquatic_ws_load_test` and
# aquatic_ws. aquatic_ws 0.9.0's lockfile pins metrics 0.22.3, which current rustc rejects
# (E0521, rust-lang/rust#141402: "borrowed data escapes"); the script then builds aquatic_ws
# from the same crate source with only metrics moved to 0.22.4 (the fixed patch release) and
# every other dependency as locked. Loopback only; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/bench/.tools

clamp() { local v=$1 lo=$2 hi=$3; [ "$v" -lt "$lo" ] && v=$lo; [ "$v" -gt "$hi" ] && v=$hi; echo "$v"; }
DURATION=$(clamp "${DURATION:-30}" 5 45)
WARMUP=$(clamp "${WARMUP:-10}" 5 15)
WARMUP=$(( WARMUP / 5 * 5 ))
CONNS=$(clamp "${CONNS:-64}" 1 4096)
ROUNDS=$(clamp "${ROUNDS:-2}" 1 5)
TRACKER_CPUS=${TRACKER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
OUT=${OUT:-$tools/runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PORT_AQ=18701 PORT_AQ_METRICS=18702 PORT_OURS=18703 PORT_OURS_METRICS=18704

log() { echo "== $*" >&2; }

# ---- tools ----------------------------------------------------------------------------------
export PATH="$tools/bin:$PATH"
if ! [ -x "$tools/bin/aquatic_ws_load_test" ]; then
  log "installing aquatic_ws_load_test into $tools"
  cargo install --locked aquatic_ws_load_test --version 0.9.0 --root "$tools"
fi
if ! [ -x "$tools/bin/aquatic_ws" ]; then
  log "installing aquatic_ws into $tools"
  if ! cargo install --locked aquatic_ws --version 0.9.0 --root "$tools" 2>"$OUT/aquatic_ws-install.log"; then
    tail -n 30 "$OUT/aquatic_ws-install.log" >&2
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/aquatic_ws-0.9.0 2>/dev/null | head -n 1)
    [ -n "$src" ] || { echo "aquatic_ws-0.9.0 source not found in the cargo registry" >&2; exit 1; }
    log "the locked build failed (see above); building with metrics 0.22.4, everything else locked"
    rm -rf "$tools/src/aquatic_ws-0.9.0"
    mkdir -p "$tools/src"
    cp -r "$src" "$tools/src/"
    printf '\n[workspace]\n' >> "$tools/src/aquatic_ws-0.9.0/Cargo.toml"
    (cd "$tools/src/aquatic_ws-0.9.0" && cargo update -p metrics --precise 0.22.4 &&
      cargo install --locked --path . --root "$tools" --target-dir "$tools/target")
  fi
fi
log "building ghostmesh-tracker and ghostmesh-harness (release)"
cargo build --release -q -p ghostmesh-tracker -p ghostmesh-harness
ours_bin=$root/target/release/ghostmesh-tracker
harness_bin=$root/target/release/ghostmesh-harness

# ---- machine, limits, certificate ------------------------------------------------------------
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo | sed 's/^ *//')"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ulimit -n: $(ulimit -n)"
  echo "rustc: $(rustc --version)"
  echo "aquatic_ws: $(aquatic_ws -v 2>&1 | head -n 1)"
  echo "settings: DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS ROUNDS=$ROUNDS TRACKER_CPUS=$TRACKER_CPUS LOAD_CPUS=$LOAD_CPUS"
} | tee "$OUT/machine.txt" >&2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=localhost" -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null

# ---- configurations: the same protocol settings on both sides ---------------------------------
aquatic_ws -p > "$OUT/aquatic_ws.default.toml"
sed -e "s|^address = .*|address = \"127.0.0.1:$PORT_AQ\"|" \
    -e 's/^socket_workers = .*/socket_workers = 1/' \
    -e 's/^swarm_workers = .*/swarm_workers = 1/' \
    -e 's/^enable_tls = .*/enable_tls = true/' \
    -e "s|^tls_certificate_path = .*|tls_certificate_path = \"$OUT/cert.pem\"|" \
    -e "s|^tls_private_key_path = .*|tls_private_key_path = \"$OUT/key.pem\"|" \
    -e 's/^max_offers = .*/max_offers = 10/' \
    -e 's/^peer_announce_interval = .*/peer_announce_interval = 120/' \
    -e 's/^run_prometheus_endpoint = .*/run_prometheus_endpoint = true/' \
    -e "s|^prometheus_endpoint_address = .*|prometheus_endpoint_address = \"127.0.0.1:$PORT_AQ_METRICS\"|" \
    "$OUT/aquatic_ws.default.toml" > "$OUT/aquatic_ws.toml"
# Ours: TLS, 10 offers, 120 s interval like aquatic; aquatic has no connection, per-IP or
# per-connection swarm limits, so ours are raised out of the way.
ours_args=(--listen "127.0.0.1:$PORT_OURS" --metrics-listen "127.0.0.1:$PORT_OURS_METRICS"
  --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem" --max-offers 10 --announce-interval-secs 120
  --max-connections 100000 --max-connections-per-ip 100000 --max-swarms-per-connection 100000
  --max-peers-per-swarm 100000 --log-level warn)

aquatic_ws_load_test -p > "$OUT/load_test.default.toml"
make_load_config() { # port -> config on stdout
  sed -e "s|^server_address = .*|server_address = \"127.0.0.1:$1\"|" \
      -e 's/^num_workers = .*/num_workers = 1/' \
      -e "s/^num_connections_per_worker = .*/num_connections_per_worker = $CONNS/" \
      -e 's/^connection_creation_interval_ms = .*/connection_creation_interval_ms = 1/' \
      -e "s/^duration = .*/duration = $(( WARMUP + DURATION ))/" \
      -e 's/^measure_after_max_connections_reached = .*/measure_after_max_connections_reached = false/' \
      "$OUT/load_test.default.toml"
}
make_load_config $PORT_AQ > "$OUT/load_test.aquatic.toml"
make_load_config $PORT_OURS > "$OUT/load_test.ours.toml"

# ---- running one tracker ----------------------------------------------------------------------
tracker_pid=""
stop_tracker() {
  if [ -n "$tracker_pid" ] && kill -0 "$tracker_pid" 2>/dev/null; then
    kill -TERM "$tracker_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$tracker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tracker_pid" 2>/dev/null || true
    wait "$tracker_pid" 2>/dev/null || true
  fi
  tracker_pid=""
}
trap stop_tracker EXIT

start_tracker() { # name
  case $1 in
    aquatic) taskset -c "$TRACKER_CPUS" aquatic_ws -c "$OUT/aquatic_ws.toml" >"$OUT/tracker.aquatic.log" 2>&1 &
             port=$PORT_AQ ;;
    ours)    taskset -c "$TRACKER_CPUS" "$ours_bin" "${ours_args[@]}" >"$OUT/tracker.ours.log" 2>&1 &
             port=$PORT_OURS ;;
  esac
  tracker_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
    kill -0 "$tracker_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start listening on 127.0.0.1:$port; its log:" >&2
  cat "$OUT/tracker.$1.log" >&2
  return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# The tracker's own counters: ours from /stats.json, aquatic's from Prometheus text.
server_counters() { # name file
  case $1 in
    ours) curl -s --max-time 2 "http://127.0.0.1:$PORT_OURS_METRICS/stats.json" >"$2" || echo '{}' >"$2" ;;
    aquatic) curl -s --max-time 2 "http://127.0.0.1:$PORT_AQ_METRICS/metrics" >"$2" || : >"$2" ;;
  esac
}

# aquatic_ws_load_test prints a block every 5 s; average the blocks after the warm-up.
parse_load_test() { # log warmup_blocks -> "resp/s announce offer answer error requests maxconns blocks"
  awk -v skip="$2" '
    /^Requests out:/ { n++; req = $3 + 0 }
    /^Responses in:/ { resp = $3 + 0 }
    /Announce responses:/ { ann = $4 }
    /Offer responses:/ { off = $4 }
    /Answer responses:/ { answ = $4 }
    /Error responses:/ { err = $4 }
    /^Active connections:/ {
      if ($3 > maxc) maxc = $3
      if (n > skip) { m++; sr += resp; sa += ann; so += off; sw += answ; se += err; sq += req }
    }
    END { if (m == 0) m = 1; printf "%.0f %.0f %.0f %.0f %.0f %.0f %d %d\n", sr/m, sa/m, so/m, sw/m, se/m, sq/m, maxc, m }' "$1"
}

results=$OUT/results.tsv
printf 'round\ttracker\tgenerator\tresponses_per_s\tannounce\toffer\tanswer\terror\trequests_per_s\tconnections\ttracker_cpu_s\tresponses_per_cpu_s\trss_end_kb\trss_peak_kb\tserver_drops\tnote\n' >"$results"

run_aquatic_load_test() { # round name
  local r=$1 name=$2 port log t0 t1 c0 c1 cpu
  log "round $r: aquatic_ws_load_test -> $name (${WARMUP}+${DURATION} s, $CONNS connections)"
  start_tracker "$name"
  server_counters "$name" "$OUT/server.$name.lt.$r.before"
  log=$OUT/load_test.$name.$r.log
  c0=$(cpu_ticks "$tracker_pid")
  timeout $(( WARMUP + DURATION + 15 )) taskset -c "$LOAD_CPUS" \
    aquatic_ws_load_test -c "$OUT/load_test.$name.toml" >"$log" 2>&1 || true
  c1=$(cpu_ticks "$tracker_pid")
  server_counters "$name" "$OUT/server.$name.lt.$r.after"
  local rss hwm; rss=$(rss_kb "$tracker_pid"); hwm=$(hwm_kb "$tracker_pid")
  stop_tracker
  # CPU over the whole run (warm-up included); responses per CPU-second uses the same span.
  cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", (b-a)/100}')
  read -r resp ann off answ err req maxc blocks < <(parse_load_test "$log" $(( WARMUP / 5 )))
  local all_resp; all_resp=$(awk '/^Responses in:/{s+=$3; n++} END{printf "%.0f", s*5}' "$log")
  local per_cpu; per_cpu=$(awk -v r="$all_resp" -v c="$cpu" 'BEGIN{ if (c > 0) printf "%.0f", r/c; else print 0 }')
  local drops="-" note=""
  if [ "$name" = ours ]; then
    drops=$(jq -s '([.[1].drops[]] | add) - ([.[0].drops[]] | add // 0)' "$OUT/server.$name.lt.$r.before" "$OUT/server.$name.lt.$r.after" 2>/dev/null || echo "-")
  else
    # aquatic counts no drops; every announce request (answers included) gets one announce
    # response generated, so requests - responses written is a lower bound of its drops.
    drops=$(awk '/^aquatic_requests_total\{.*type="announce"/{q+=$NF} /^aquatic_responses_total\{.*type="announce"/{p+=$NF} END{printf ">=%d", q-p}' "$OUT/server.$name.lt.$r.after")
  fi
  [ "$blocks" -lt 1 ] && note="no samples after the warm-up"
  printf '%s\t%s\taquatic_ws_load_test\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$r" "$name" "$resp" "$ann" "$off" "$answ" "$err" "$req" "$maxc" "$cpu" "$per_cpu" "$rss" "$hwm" "$drops" "$note" >>"$results"
}

run_our_bench() { # round name
  local r=$1 name=$2 port stats=() json
  log "round $r: ghostmesh-harness bench tracker -> $name (${WARMUP}+${DURATION} s, $CONNS connections)"
  start_tracker "$name"
  case $name in
    aquatic) port=$PORT_AQ ;;
    ours) port=$PORT_OURS; stats=(--stats-url "http://127.0.0.1:$PORT_OURS_METRICS/stats.json") ;;
  esac
  json=$OUT/bench.$name.$r.json
  timeout $(( WARMUP + DURATION + 30 )) taskset -c "$LOAD_CPUS" "$harness_bin" bench tracker \
    --url "wss://127.0.0.1:$port" --insecure --tracker-pid "$tracker_pid" "${stats[@]}" \
    --connections "$CONNS" --warmup "$WARMUP" --duration "$DURATION" --threads 1 --connect-phase 20 \
    --json "$json" >"$OUT/bench.$name.$r.txt" 2>&1 || true
  stop_tracker
  if ! [ -s "$json" ]; then
    printf '%s\t%s\tbench tracker\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n' "$r" "$name" "no report; see $OUT/bench.$name.$r.txt" >>"$results"
    return
  fi
  jq -r --arg r "$r" --arg n "$name" '
    def rate(x): (x / .window_secs | round);
    [ $r, $n, "bench tracker",
      (.responses_per_sec | round), rate(.responses.announce), rate(.responses.offer),
      rate(.responses.answer), rate(.responses.error),
      rate(.requests.announce + .requests.answer + .requests.scrape), .opened,
      (.server.cpu_secs // 0), (if (.server.cpu_secs // 0) > 0 then ((.responses.announce + .responses.offer + .responses.answer + .responses.error + .responses.scrape) / .server.cpu_secs | round) else 0 end),
      ((.server.rss_end // 0) / 1024 | round), ((.server.rss_peak // 0) / 1024 | round),
      (if .server.counters then ([.server.counters.drops[]] | add) else "-" end),
      ("client drops: " + ((.client_drops.announce_timeouts + .client_drops.announce_replies_skipped) | tostring) + " announces unanswered; p50/p99 " + ((.latency_ms.p50 // 0) | tostring) + "/" + ((.latency_ms.p99 // 0) | tostring) + " ms")
    ] | @tsv' "$json" >>"$results"
}

for r in $(seq 1 "$ROUNDS"); do
  # Alternate who goes first, so neither always runs on a warmer or quieter machine.
  if [ $(( r % 2 )) -eq 1 ]; then order="aquatic ours"; else order="ours aquatic"; fi
  for name in $order; do run_aquatic_load_test "$r" "$name"; done
  for name in $order; do run_our_bench "$r" "$name"; done
done
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

# ---- summary ----------------------------------------------------------------------------------
echo
echo "Results ($OUT/results.tsv):"
column -t -s $'\t' "$results"
echo
echo "Ratio ours / aquatic (mean over rounds):"
awk -F'\t' 'NR > 1 && $4 != "-" {
    k = $3; n[k "," $2]++; resp[k "," $2] += $4; cpu[k "," $2] += $12; gens[k] = 1 }
  END {
    for (g in gens) {
      a = resp[g ",aquatic"] / (n[g ",aquatic"] ? n[g ",aquatic"] : 1)
      o = resp[g ",ours"] / (n[g ",ours"] ? n[g ",ours"] : 1)
      ac = cpu[g ",aquatic"] / (n[g ",aquatic"] ? n[g ",aquatic"] : 1)
      oc = cpu[g ",ours"] / (n[g ",ours"] ? n[g ",ours"] : 1)
      printf "  %-22s responses/s: aquatic %.0f, ours %.0f, ratio %.2f;  responses per tracker CPU-second: aquatic %.0f, ours %.0f, ratio %.2f\n",
        g, a, o, (a > 0 ? o / a : 0), ac, oc, (ac > 0 ? oc / ac : 0)
    }
  }' "$results"

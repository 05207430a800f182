#!/bin/sh
# Runs one interop script (node) inside a fresh network namespace that holds only `lo`, so all
# WebSocket and WebRTC traffic stays on 127.0.0.1: no ICE checks towards this machine's real
# interfaces, no STUN, no mDNS. Needs root (or CAP_SYS_ADMIN) for `unshare -n`, and `ip`.
#
#   interop/run.sh interop/p2pt-pair.mjs                                   # reference tracker
#   TRACKER_CMD=target/debug/ghostmesh-tracker interop/run.sh interop/p2pt-pair.mjs
#
# The environment (TRACKER_CMD, DEBUG, ...) passes through unchanged; exit status is node's.
set -eu
if [ "$#" -lt 1 ]; then
  echo "usage: $0 SCRIPT.mjs [ARGS...]" >&2
  exit 2
fi
for tool in unshare ip node; do
  command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: '$tool' not found in PATH" >&2; exit 127; }
done
# `exec` keeps one process (node) per level: killing it, or its process group, ends everything.
exec unshare -n sh -c 'ip link set lo up && exec node "$@"' sh "$@"

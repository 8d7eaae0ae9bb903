#!/usr/bin/env bash
# One node down under load: runs the e2e benchmark's cluster, kill -9s node 3 a few seconds into
# the timed run, restarts it DOWN seconds later with its own command line, and prints node 0's and
# node 3's `reckon_height` every 5 s, then the benchmark's summary (digests must agree).
#   perf/node-down.sh [BIN_DIR] [OUT_DIR]  env: DOWN=25 DURATION=80 POLLS=10 LEDGER_TRANSFERS= RATE= BATCH=8190 NODE_SET= SIGNAL=KILL
# SIGNAL=STOP hangs node 3 instead (SIGSTOP, then SIGCONT after DOWN seconds, no restart): a hung
# host, whose kernel keeps its connections open and accepts bytes until the buffers fill.
# NODE_SET: space-separated SECTION.KEY=VALUE settings for every node (bench-harness e2e --node-set).
# RATE (transfers/s) runs one open-loop phase at that rate instead of the closed loop, so a long
# outage stays within the default ledger sizing. Blocks come at ~92/s only while requests keep
# every round's payload non-empty: at RATE=35000 with 8,190-event requests (4 requests/s) the
# cluster made ~19 blocks/s. To leave node 3 more blocks behind than the 16,384-block sync window,
# use smaller requests, e.g. BATCH=128 RATE=30000 DOWN=220 DURATION=360 POLLS=26.
# The harness sizes each ledger for at most 12,000,000 transfers; a run that commits more (about
# 70 s at full rate) grows the tables as it goes, slower than within capacity. Set LEDGER_TRANSFERS
# (passed as --ledger-transfers) to size them for longer runs, memory permitting.
# BIN_DIR holds release `bench-harness` and `reckon` (default target/release, built if missing).
# Writes OUT_DIR/{e2e.txt,e2e.err,node-*.log,node-3.restart.log,heights.txt} (default perf/out/node-down-<UTC>).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release}
out=${2:-perf/out/node-down-$(date -u +%Y%m%dT%H%M%SZ)}
down=${DOWN:-25}
duration=${DURATION:-80}
polls=${POLLS:-10}
if [ ! -x "$bin/bench-harness" ]; then
  cargo build --release -p bench-harness -p reckon-engine
fi
mkdir -p "$out"
sizing=()
if [ -n "${LEDGER_TRANSFERS:-}" ]; then sizing=(--ledger-transfers "$LEDGER_TRANSFERS"); fi
load=(--in-flight 2)
if [ -n "${RATE:-}" ]; then load=(--rate "$RATE"); fi
for setting in ${NODE_SET:-}; do sizing+=(--node-set "$setting"); done
# --in-flight 2: one closed-loop phase, as in session 9 (the default batched run is two phases,
# an open loop at 220,000 transfers/s and then the closed-loop ceiling).
"$bin/bench-harness" e2e --nodes 4 --duration "$duration" --batch "${BATCH:-8190}" "${load[@]}" "${sizing[@]}" --out "$out/e2e" \
  >"$out/e2e.txt" 2>"$out/e2e.err" &
bench=$!
# The timed run starts after presigning; the harness prints the log mapping line first.
for _ in $(seq 1 300); do
  sleep 1
  grep -q "mapped in" "$out/e2e.err" && break
done
sleep 8
node_line() { ps -o pid=,args= --ppid "$bench" | grep "node --config" | grep "node-$1" | head -1; }
line3=$(node_line 3)
pid3=$(echo "$line3" | awk '{print $1}')
args3=$(echo "$line3" | awk '{$1 = ""; sub(/^ +/, ""); print}')
logdir=$(dirname "$(dirname "$(echo "$args3" | awk '{print $NF}')")")
port() { grep -h metrics_listen "$1" | sed 's/.*:\([0-9]*\)".*/\1/'; }
port0=$(port "$(node_line 0 | awk '{print $NF}')")
port3=$(port "$(echo "$args3" | awk '{print $NF}')")
height() { curl -s --max-time 1 "localhost:$1/metrics" | grep '^reckon_height' | awk '{print $2}'; }
round() { curl -s --max-time 1 "localhost:$1/metrics" | grep '^reckon_round' | awk '{print $2}'; }
say() { echo "$*" | tee -a "$out/heights.txt"; }
say "before kill: node0 $(height "$port0") node3 $(height "$port3")"
restarted=
if [ "${SIGNAL:-KILL}" = STOP ]; then
  kill -STOP "$pid3"
  say "stopped node 3 (SIGSTOP) at $(date -u +%H:%M:%S.%3N) UTC"
  sleep "$down"
  kill -CONT "$pid3"
  say "continued after ${down}s: node0 $(height "$port0")"
else
  kill -9 "$pid3"
  say "killed node 3 at $(date -u +%H:%M:%S.%3N) UTC"
  sleep "$down"
  say "restart after ${down}s: node0 $(height "$port0")"
  # shellcheck disable=SC2086 # the node's own command line, word-split on purpose
  nohup $args3 >"$out/node-3.restart.log" 2>&1 &
  restarted=$!
fi
for k in $(seq 1 "$polls"); do
  sleep 5
  say "+$((k * 5))s node0 $(height "$port0") node3 $(height "$port3") (round $(round "$port3"))"
  cp "$logdir"/node-*.log "$out/" 2>/dev/null || true # the harness removes its directory at exit
  curl -s --max-time 1 "localhost:$port0/metrics" >"$out/node-0.metrics.$((k * 5))s" || true
  curl -s --max-time 1 "localhost:$port3/metrics" >"$out/node-3.metrics.$((k * 5))s" || true
done
wait "$bench" || true
if [ -n "$restarted" ]; then kill "$restarted" 2>/dev/null || true; fi
tail -4 "$out/e2e.txt"

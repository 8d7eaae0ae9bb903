#!/usr/bin/env bash
# A host pause under load: runs the e2e benchmark's cluster at an open-loop rate, stops every node
# (SIGSTOP) for PAUSE seconds AT seconds into the timed run, as a host that stalls (steal, a VM
# pause, a long page-reclaim) would, then continues them, and prints the per-second latency around
# the pause and the run's p99 and max: how long a pause the cluster absorbs at that rate within a
# latency target, and how long it takes to drain what arrived meanwhile.
#   perf/host-stall.sh [BIN_DIR] [OUT_DIR]  env: PAUSE=0.2 AT=12 RATE=220000 DURATION=30 BATCH=8190
# The load generator is not paused: requests keep arriving at their intended times, and latency
# runs from those (coordinated-omission corrected), as a client of a stalled consortium sees it.
# BIN_DIR holds release `bench-harness` and `reckon` (default target/release, built if missing).
# Writes OUT_DIR/{e2e.txt,e2e/,pause.txt} (default perf/out/host-stall-<UTC>).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release}
out=${2:-perf/out/host-stall-$(date -u +%Y%m%dT%H%M%SZ)}
pause=${PAUSE:-0.2}
at=${AT:-12}
if [ ! -x "$bin/bench-harness" ]; then
  cargo build --release -p bench-harness -p reckon-engine
fi
mkdir -p "$out"
"$bin/bench-harness" e2e --nodes 4 --duration "${DURATION:-30}" --batch "${BATCH:-8190}" \
  --rate "${RATE:-220000}" --json --out "$out/e2e" >"$out/e2e.txt" 2>&1 &
bench=$!
# The timed run starts when the warm-up's summary line ("N requests done") is printed.
for _ in $(seq 1 3000); do
  grep -q "requests done" "$out/e2e.txt" && break
  sleep 0.1
done
sleep "$at"
pids=$(ps -o pid=,args= --ppid "$bench" | grep "node --config" | awk '{print $1}' | tr '\n' ' ')
date +%s.%N >"$out/pause.txt"
# shellcheck disable=SC2086 # one pid per word
kill -STOP $pids
sleep "$pause"
# shellcheck disable=SC2086
kill -CONT $pids
wait "$bench" || true
python3 - "$out" "$pause" <<'PY'
import json, sys
out, pause = sys.argv[1], float(sys.argv[2])
summary = json.load(open(f"{out}/e2e/summary.json"))
start = summary["started_at_unix_s"]
paused_at = float(open(f"{out}/pause.txt").read()) - start
print(f"paused every node for {pause:.2f} s at +{paused_at:.2f} s of the timed run")
for s in summary["timeline"]:
    if -3 <= s["start_s"] - paused_at <= 4:
        print(f"  +{s['start_s']:4.0f} s  {s['requests_done']:3d} requests done  "
              f"p50 {s['latency_ms_p50']:7.1f} ms  max {s['latency_ms_max']:7.1f} ms")
last = json.loads(open(f"{out}/e2e.txt").read().strip().splitlines()[-1])
print(f"run: {last['transfers_per_s']:.0f} transfers/s, p50 {last['p50_ms']:.1f} ms, "
      f"p99 {last['p99_ms']:.1f} ms, p99.9 {last['p999_ms']:.1f} ms")
PY

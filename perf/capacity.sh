#!/usr/bin/env bash
# Runs every stage benchmark once, in one session, and keeps each full output plus its --json line.
# The figures in docs/CAPACITY.md come from one run of this script.
#   perf/capacity.sh [OUT_DIR]        (default perf/out/capacity-<UTC timestamp>)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf/out/capacity-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
cargo build --release -p bench-harness -p loadgen -p reckon-engine --bins
bin=${CARGO_TARGET_DIR:-target}/release
run() { # name, command...
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/commands.txt"
  "$@" > "$out/$name.txt" 2>&1
  tail -n 1 "$out/$name.txt" >> "$out/results.jsonl"
  cat "$out/$name.txt"
}
{ date -u; nproc; uptime; } > "$out/machine.txt"
run limits     $bin/bench-harness limits --json
run ledger     $bin/bench-harness ledger --transfers 10000000 --json
run log-1mib   $bin/bench-harness log --blocks 1250 --block-bytes 1048576 --reopen --json
run log-128kib $bin/bench-harness log --blocks 4000 --block-bytes 131072 --json
run verify     $bin/bench-harness verify --sigs 2048 --json
run consensus4 $bin/bench-harness consensus --nodes 4 --blocks 1000 --json
run sim4       $bin/reckon sim --seeds 200 --nodes 4 --json
run sim7       $bin/reckon sim --seeds 50 --nodes 7 --first-seed 10000 --json
echo "results in $out"

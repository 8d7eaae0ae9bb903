#!/usr/bin/env bash
# Sampling profile (software cpu-clock: this VM exposes no hardware counters) of a bench-harness
# stage, with call graphs, summarised as text.
#   perf/record.sh verify --sigs 4096
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: perf/record.sh STAGE [bench-harness args...]}
cargo build --release -p bench-harness
mkdir -p perf/out
data="perf/out/perf.${stage}.data"
perf record -e cpu-clock -F 999 -g -o "$data" -- target/release/bench-harness "$@"
perf report -i "$data" --stdio --no-children --percent-limit 1 2>/dev/null | head -60

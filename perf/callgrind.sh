#!/usr/bin/env bash
# Instruction-count profile of one bench-harness stage under callgrind. Instruction counts are
# repeatable on this shared, noisy machine where wall-clock samples are not.
#   perf/callgrind.sh ledger --transfers 200000
# Writes perf/out/callgrind.<stage>.out and prints the top functions by inclusive instructions.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: perf/callgrind.sh STAGE [bench-harness args...]}
cargo build --release -p bench-harness
mkdir -p perf/out
out="perf/out/callgrind.${stage}.out"
valgrind --tool=callgrind --callgrind-out-file="$out" target/release/bench-harness "$@"
callgrind_annotate --inclusive=yes "$out" 2>/dev/null | head -40

#!/usr/bin/env bash
# Builds every fuzz target with clang-14 (libFuzzer + ASan + UBSan) and runs each for SECONDS
# (default 60), seeded from its corpus in the repo, tests/fuzz/seeds/<target>/. Exits non-zero on
# the first crash, leak, hang or out-of-memory, leaving the input in BUILD/crashes/.
# ./tests/run.sh runs this for 20 s per target, ./tests/run.sh --long for 10 minutes; by hand:
#   ./tests/fuzz/run.sh 600
#   ./tests/fuzz/run.sh 60 config_fuzz ear_fuzz     only these targets
# The build directory is build/fuzz, or $ATLS_FUZZ_BUILD; $ATLS_FUZZ_JOBS caps the build jobs.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
build=${ATLS_FUZZ_BUILD:-build/fuzz}

all_targets=(
  remote_attestation_fuzz
  exported_authenticator_fuzz
  evidence_fuzz
  ear_fuzz
  endorsements_fuzz
  proxy_protocol_fuzz
  config_fuzz
  mux_fuzz
  veraison_answers_fuzz
)
targets=("${all_targets[@]}")
[ $# -gt 0 ] && targets=("$@")

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DATLS_FUZZ=ON -DATLS_BUILD_TESTS=OFF -DATLS_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"${ATLS_FUZZ_JOBS:-$(nproc)}" --target "${targets[@]}" >/dev/null

run() {  # target
  local target=$1 seeds=tests/fuzz/seeds/${1%_fuzz}
  local corpus=$build/corpus/$target
  # Mutations stay near the size of real inputs (the evidence vector is 659 bytes); the decoders'
  # own limits are far higher. The example config is 4 KiB, so configs get twice the room.
  local max_len=4096
  [ "$target" = config_fuzz ] && max_len=8192
  mkdir -p "$corpus" "$build/crashes"
  echo "== fuzz $target for ${seconds}s"
  # -timeout: an input that takes 25 s is a hang and fails the run (libFuzzer's default, 20
  # minutes, would stall ./tests/run.sh). New inputs go to BUILD/corpus; the seeds are only read.
  # stdin is /dev/null: the config loader opens the files a config names, and one that names
  # /dev/stdin must not wait for a terminal.
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$build/crashes/$target-" "$corpus" "$seeds" \
    </dev/null 2>&1 |
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)|^==[0-9]+==|ERROR|SUMMARY|Test unit written'
  return "${PIPESTATUS[0]}"
}

for target in "${targets[@]}"; do
  run "$target"
done

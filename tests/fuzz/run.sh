#!/usr/bin/env bash
# Builds every fuzz target with clang-14 (libFuzzer + ASan + UBSan) and runs each for SECONDS
# (default 60), seeded from the vectors. Exits non-zero on the first crash, leaving the input in
# build/fuzz/crashes/. ./tests/run.sh runs this briefly; run it longer by hand:
#   ./tests/fuzz/run.sh 600
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
build=build/fuzz

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DATLS_FUZZ=ON -DATLS_BUILD_TESTS=OFF >/dev/null
targets=(
  remote_attestation_fuzz
  exported_authenticator_fuzz
  evidence_fuzz
  ear_fuzz
  endorsements_fuzz
  proxy_protocol_fuzz
)
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null

run() {  # target seed-file...
  local target=$1
  shift
  local corpus=$build/corpus/$target seeds=$build/seeds/$target
  mkdir -p "$corpus" "$seeds" "$build/crashes"
  cp "$@" "$seeds/"
  echo "== fuzz $target for ${seconds}s"
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$build/crashes/$target-" "$corpus" "$seeds" 2>&1 |
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)|^==[0-9]+==ERROR|SUMMARY'
  return "${PIPESTATUS[0]}"
}

run evidence_fuzz ../shared/vectors/parsec-tpm-evidence.cbor
run ear_fuzz ../shared/vectors/ear-valid-0.jwt ../shared/vectors/ear-invalid-hs256.jwt \
  ../shared/vectors/ear-invalid-alg-none.jwt
# Seeds: a real `atlsctl veraison endorsements` (PCRs 0-7), each file and both joined by a NUL.
run endorsements_fuzz tests/fuzz/seeds/endorsements/* ../shared/vectors/comid-refval.json
run exported_authenticator_fuzz tests/fuzz/seeds/exported_authenticator/*.bin
run remote_attestation_fuzz tests/fuzz/seeds/remote_attestation/*
run proxy_protocol_fuzz tests/fuzz/seeds/proxy_protocol/*.bin

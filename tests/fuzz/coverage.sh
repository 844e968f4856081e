#!/usr/bin/env bash
# Line coverage each fuzz target reaches in the parser it exists for. Builds the targets with
# clang-14 source-based coverage (-fprofile-instr-generate -fcoverage-mapping) in build/fuzz-cov
# (or $ATLS_FUZZ_COV_BUILD), runs each once over its seed corpus (tests/fuzz/seeds/<target>/)
# and, when present, the corpus that ./tests/fuzz/run.sh grew (BUILD/corpus/<target>, BUILD
# being build/fuzz or $ATLS_FUZZ_BUILD), and prints llvm-cov-14's report for the parser's
# source files. No fuzzing happens here: run ./tests/fuzz/run.sh SECONDS first to measure what
# a run of that length reaches.
#   ./tests/fuzz/coverage.sh                  every target
#   ./tests/fuzz/coverage.sh config_fuzz      only these
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${ATLS_FUZZ_COV_BUILD:-build/fuzz-cov}
fuzz_build=${ATLS_FUZZ_BUILD:-build/fuzz}

# The parser source files each target is there to exercise (what the report covers).
declare -A sources=(
  [remote_attestation_fuzz]="lib/tls/remote_attestation.cpp lib/tls/cmw.cpp"
  [exported_authenticator_fuzz]="lib/tls/exported_authenticator.cpp lib/tls/attestation_framing.cpp"
  [evidence_fuzz]="lib/attest/evidence.cpp lib/attest/detail/cbor.cpp lib/verify/local_appraisal.cpp"
  [ear_fuzz]="lib/verify/ear.cpp lib/verify/jose.cpp"
  [endorsements_fuzz]="lib/verify/endorsements.cpp"
  [proxy_protocol_fuzz]="lib/proxy/proxy_protocol.cpp"
  [config_fuzz]="lib/config/config.cpp lib/config/verifier_policy.cpp lib/config/detail/checker.cpp"
  [mux_fuzz]="lib/proxy/mux.cpp"
)
targets=(remote_attestation_fuzz exported_authenticator_fuzz evidence_fuzz ear_fuzz
  endorsements_fuzz proxy_protocol_fuzz config_fuzz mux_fuzz)
[ $# -gt 0 ] && targets=("$@")

for tool in clang++-14 llvm-profdata-14 llvm-cov-14; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (deploy/setup.sh installs it)"; exit 1; }
done

# The fuzz build (ATLS_FUZZ: libFuzzer's main, ASan, UBSan) plus coverage mapping, so that the
# code measured is the code fuzzed.
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DATLS_FUZZ=ON -DATLS_BUILD_TESTS=OFF -DATLS_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="-fprofile-instr-generate -fcoverage-mapping" \
  -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" >/dev/null
cmake --build "$build" -j"${ATLS_FUZZ_JOBS:-$(nproc)}" --target "${targets[@]}" >/dev/null

mkdir -p "$build/profiles"
for target in "${targets[@]}"; do
  corpora=("tests/fuzz/seeds/${target%_fuzz}")
  [ -d "$fuzz_build/corpus/$target" ] && corpora+=("$fuzz_build/corpus/$target")
  rm -f "$build/profiles/$target".*
  # -runs=0: execute every input of the corpora once, then stop.
  LLVM_PROFILE_FILE="$build/profiles/$target.%p.profraw" \
    "$build/tests/fuzz/$target" -runs=0 -max_len=1048576 "${corpora[@]}" </dev/null >/dev/null 2>&1
  llvm-profdata-14 merge -sparse "$build/profiles/$target".*.profraw \
    -o "$build/profiles/$target.profdata"
  inputs=$(find "${corpora[@]}" -type f | wc -l)
  echo "== $target: $inputs inputs from ${corpora[*]}"
  # Filename, then regions, functions and lines, each as count, missed, cover (llvm-cov 14).
  # shellcheck disable=SC2086 # a list of paths without spaces
  llvm-cov-14 report "$build/tests/fuzz/$target" -instr-profile="$build/profiles/$target.profdata" \
    ${sources[$target]} |
    awk 'NF >= 10 && $1 != "Filename" {
      printf "  %-42s lines %5d, missed %5d: %7s   functions %s\n", $1, $8, $9, $10, $7 }'
done

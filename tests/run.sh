#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds atlsd and runs every test: the unit and end-to-end suites in
# a normal build with warnings as errors, then the whole suite again under AddressSanitizer and
# UndefinedBehaviorSanitizer. Exits non-zero on any failure.
#
#   ./tests/run.sh          everything (what CI runs)
#   ./tests/run.sh --quick  the normal build only, for a fast local loop
#   ./tests/run.sh --long   everything, then the long runs, about 80 minutes more: each fuzz
#                           target for 10 minutes (tests/fuzz/README.md), then the soak test
#                           (ctest -R soak in build/release) with ATLS_SOAK_SECONDS=600
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
long=0
case "${1:-}" in
  --quick) quick=1 ;;
  --long) long=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--quick | --long]" >&2
    exit 2
    ;;
esac

./deploy/setup.sh
jobs=$(nproc)

echo "== format and static analysis"
./tests/lint.sh

# A short smoke run: the fuzzers build and survive 20 s each from their seeds (about 3 minutes
# for the seven). --long runs them for 10 minutes each at the end; by hand:
# ./tests/fuzz/run.sh SECONDS [TARGET...].
./tests/fuzz/run.sh 20

suite() {  # build-dir extra-cmake-args...
  local dir=$1
  shift
  echo "== build $dir"
  cmake -S . -B "$dir" -DATLS_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  echo "== test $dir"
  # The end-to-end tests start daemons and peers on loopback; two cases per core keeps them
  # well inside their time limits on a 2-core machine.
  (cd "$dir" && ctest -j$((jobs * 2)) --output-on-failure)
}

suite build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ $quick -eq 0 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  suite build/sanitize -DCMAKE_BUILD_TYPE=Debug -DATLS_SANITIZE=ON
fi

if [ $long -eq 1 ]; then
  echo "== long fuzz runs: 10 minutes per target"
  # The fuzzers set their own sanitizer options; the suite's above are for the test binaries.
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS ./tests/fuzz/run.sh 600
  echo "== soak: 10 minutes"
  # The soak test reads its duration from ATLS_SOAK_SECONDS (short by default, so that the
  # normal suite above ran it briefly); its own TIMEOUT leaves room for 600 s.
  (cd build/release && ATLS_SOAK_SECONDS=600 ctest -R soak --output-on-failure --no-tests=error)
fi

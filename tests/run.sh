#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds atlsd and runs every test: the unit and end-to-end suites in
# a normal build with warnings as errors, then the whole suite again under AddressSanitizer and
# UndefinedBehaviorSanitizer. Exits non-zero on any failure.
#
#   ./tests/run.sh          everything (what CI runs)
#   ./tests/run.sh --quick  the normal build only, for a fast local loop
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

./deploy/setup.sh
jobs=$(nproc)

echo "== format and static analysis"
./tests/lint.sh

# A short smoke run: the fuzzers build and survive a few seconds from the vectors. Longer runs:
# ./tests/fuzz/run.sh SECONDS.
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

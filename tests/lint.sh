#!/usr/bin/env bash
# clang-format must leave every C++ file unchanged; clang-tidy (.clang-tidy at the root) must
# report nothing in lib/, daemon/ and bench/. Needs a configured build for compile_commands.json.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t sources < <(git ls-files '*.cpp' '*.hpp')
clang-format-14 --dry-run -Werror "${sources[@]}"
echo "clang-format: ${#sources[@]} files clean"

build=build/lint
cmake -S . -B "$build" -DATLS_BUILD_TESTS=OFF >/dev/null
mapfile -t units < <(git ls-files 'lib/*.cpp' 'daemon/*.cpp' 'bench/*.cpp')
# The bench borrows the swtpm fixture from tests/support, and test code is not held to these
# checks (no other unit here includes it), so the header filter leaves tests/ out.
# One clang-tidy per core; each unit pulls in Asio's coroutine headers and takes a while.
printf '%s\n' "${units[@]}" |
  xargs -P "$(nproc)" -I{} clang-tidy-14 -p "$build" --quiet --warnings-as-errors='*' \
    --header-filter='.*/(lib|daemon|bench)/.*\.hpp$' {} \
    2> >(grep -v -E '^[0-9]+ warnings? generated|^Suppressed|^Use -header-filter|^$' >&2)
echo "clang-tidy: ${#units[@]} translation units clean"

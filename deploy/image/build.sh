#!/usr/bin/env bash
# The image's build step: configures SRC (a copy of the repository with what the Containerfile
# copies) for a Release build into BUILD, installing under /usr (so the example config lands in
# /etc/atlsd), without the tests and benchmarks, and builds atlsd and atlsctl.
#
#   build.sh SRC BUILD                    configure and build
#   build.sh --configure-only SRC BUILD   configure only: how tests/deploy/image_recipe_check.py
#                                         proves that the files the Containerfile copies are
#                                         enough (CMake fails at generation on a missing source)
set -euo pipefail

configure_only=false
if [ "${1:-}" = --configure-only ]; then
  configure_only=true
  shift
fi
if [ $# -ne 2 ]; then
  echo "usage: $0 [--configure-only] SRC BUILD" >&2
  exit 2
fi
src=$1
build=$2

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DATLS_BUILD_TESTS=OFF -DATLS_BUILD_BENCH=OFF -DATLS_WERROR=OFF
if [ "$configure_only" = true ]; then
  exit 0
fi
cmake --build "$build" --target atlsd atlsctl -j"$(nproc)"

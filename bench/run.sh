#!/usr/bin/env bash
# The benchmark suite (bench/README.md): atlsd against a stunnel pair, a haproxy pair and no proxy
# at all, on loopback, with ratios against baselines measured in the same run.
#
#   ./bench/run.sh            the full run (about 10 minutes on 2 cores): table + bench/results/latest.json
#   ./bench/run.sh --quick    small sizes, short runs (about 2 minutes)
#   ./bench/run.sh --only b1,b5   a subset of b1..b5
#
# It installs what it needs from Debian (deploy/setup.sh for the build, then the packages below),
# builds atlsd in Release into build/bench, raises the soft fd limit to the hard one, and runs
# bench/run.py. Run it as root on a quiet machine; on a shared one, compare the ratios, not the
# absolute figures. BENCH_JOBS sets the build's parallelism (default: the number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the benchmarks themselves use, beyond deploy/setup.sh's build and test packages:
# the two proxies compared, the load generators, and swtpm for the attested pairs.
packages=(stunnel4 haproxy wrk hyperfine swtpm swtpm-tools openssl python3)

./deploy/setup.sh >&2
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
  fi
  echo "bench: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Release, without -Werror: the benchmark measures the code as users build it, and gcc 12 at -O3
# raises maybe-uninitialized warnings that -O2 does not.
build=build/bench
echo "bench: building atlsd (Release) in $build" >&2
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DATLS_WERROR=OFF -DATLS_BUILD_TESTS=ON \
  -DATLS_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j"${BENCH_JOBS:-$(nproc)}" \
  --target atlsd atlsctl atls-veraison-test-server atls_netload >/dev/null

# B4 holds thousands of connections: every proxy process needs two descriptors for each.
ulimit -n "$(ulimit -Hn)"
exec python3 bench/run.py --build-dir "$build" "$@"

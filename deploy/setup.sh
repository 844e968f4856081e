#!/usr/bin/env bash
# Installs exactly the Debian 12 packages that atlsd's build, tests and demo need.
# Idempotent: packages already present are left alone, and apt is not touched at all
# when nothing is missing. Run as root (or with sudo available).
#
# Boost comes only as versioned 1.81 packages: the unversioned libboost-*-dev names point at
# 1.74 and conflict with 1.81 (see ../shared/design/FACTS.md).
set -euo pipefail

packages=(
  # build
  g++ cmake make pkg-config
  libboost1.81-dev libboost-system1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev libyaml-cpp-dev libspdlog-dev libsystemd-dev libtss2-dev libnghttp2-dev
  # tests
  doctest-dev openssl curl clang-format-14 clang-tidy-14 swtpm swtpm-tools
  clang-14 libclang-rt-14-dev
  # the fuzzers' line coverage (tests/fuzz/coverage.sh): llvm-profdata-14 and llvm-cov-14
  llvm-14
  # TLS conformance of an inbound listener as an outside tool sees it (tests/e2e/testssl_test.sh)
  testssl.sh
  # a real PROXY protocol v2 receiver behind an inbound listener (tests/e2e/proxy_protocol_test)
  haproxy
  # demo: the stand-in workload is python3's http.server
  python3
  # the systemd units (tests/deploy/systemd_*): systemd-analyze verify and security, and
  # atlsd run inside the unit's seccomp filters by python3-seccomp, traced by strace; procps
  # for pgrep there and for the unit's /bin/kill
  systemd python3-seccomp strace procps
  # the .deb (tests/deploy/package_*): cpack's DEB generator runs dpkg-shlibdeps (dpkg-dev) on
  # the ELF files it finds with file
  dpkg-dev file
  # the Kubernetes manifests' schema check (tests/deploy/kubernetes_check.py) reads YAML
  python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"

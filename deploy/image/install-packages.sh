#!/usr/bin/env bash
# Installs the Debian packages named in LIST (one a line, `#` comments), without recommends.
#
#   install-packages.sh [--clean-apt-lists] LIST   install (the Containerfile's RUN steps)
#   install-packages.sh --check LIST               change nothing: print the names, and fail
#                                                  when one is not installed on this machine
#
# --check is how tests/deploy/image_recipe_check.py reads the lists with the same parser the
# image build uses, on a Debian 12 machine where the suite's build already needed them.
# --clean-apt-lists removes apt's package lists afterwards (about 20 MB an image does not need);
# never pass it on a host.
set -euo pipefail

mode=install
clean=false
case "${1:-}" in
  --check)
    mode=check
    shift
    ;;
  --clean-apt-lists)
    clean=true
    shift
    ;;
esac
if [ $# -ne 1 ]; then
  echo "usage: $0 [--check | --clean-apt-lists] LIST" >&2
  exit 2
fi

packages=()
while IFS= read -r line || [ -n "$line" ]; do
  line=${line%%#*}
  for word in $line; do
    packages+=("$word")
  done
done <"$1"
if [ ${#packages[@]} -eq 0 ]; then
  echo "$0: no packages in $1" >&2
  exit 1
fi

if [ "$mode" = check ]; then
  status=0
  for p in "${packages[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      echo "$p"
    else
      echo "$0: $1: package '$p' is not installed on this machine" >&2
      status=1
    fi
  done
  exit "$status"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"
if [ "$clean" = true ]; then
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi

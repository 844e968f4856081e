#!/usr/bin/env bash
# The image's install step: `cmake --install --strip` of BUILD into a scratch root, from which
# STAGING receives exactly what the final image holds:
#
#   usr/sbin/atlsd  usr/bin/atlsctl  etc/atlsd/atlsd.example.yaml
#
# The Containerfile copies STAGING to / in the final stage. Taking a fixed list (rather than the
# whole install) keeps what other install rules add, such as the systemd unit, out of the image;
# a file missing from the install is an error, not a smaller image. tests/deploy/
# image_recipe_check.py runs this script on the test suite's build tree.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD STAGING" >&2
  exit 2
fi
build=$1
staging=$2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
DESTDIR="$scratch" cmake --install "$build" --prefix /usr --strip >/dev/null

# The example config's directory comes from the configure-time prefix (/etc for /usr, the image
# build's; /usr/local/etc for a default build tree), so it is looked up rather than assumed.
example=$(find "$scratch" -path '*/etc/atlsd/atlsd.example.yaml' -print -quit)
for f in "$scratch/usr/sbin/atlsd" "$scratch/usr/bin/atlsctl" "$example"; do
  if [ ! -f "$f" ]; then
    echo "$0: cmake --install $build did not install ${f:-etc/atlsd/atlsd.example.yaml}" >&2
    exit 1
  fi
done

mkdir -p "$staging/usr/sbin" "$staging/usr/bin" "$staging/etc/atlsd"
install -m 0755 "$scratch/usr/sbin/atlsd" "$staging/usr/sbin/atlsd"
install -m 0755 "$scratch/usr/bin/atlsctl" "$staging/usr/bin/atlsctl"
install -m 0644 "$example" "$staging/etc/atlsd/atlsd.example.yaml"

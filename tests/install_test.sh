#!/usr/bin/env bash
# `cmake --install` puts the binaries, the example configs, the config reference and the systemd
# units where the units expect them. Installs into a scratch DESTDIR; needs no root.
# usage: install_test.sh BUILD_DIR SBINDIR BINDIR SYSCONFDIR UNITDIR
set -euo pipefail
build=$1 sbindir=$2 bindir=$3 sysconfdir=$4 unitdir=$5
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

DESTDIR=$root cmake --install "$build" >/dev/null

fail=0
for f in "$sbindir/atlsd" "$bindir/atlsctl" "$sysconfdir/atlsd/atlsd.example.yaml" \
  "$sysconfdir/atlsd/atlsd.socket-activated.example.yaml" "$unitdir/atlsd.service" \
  "$unitdir/atlsd.socket"; do
  if [ ! -f "$root$f" ]; then
    echo "missing after install: $f"
    fail=1
  fi
done
unit=$root$unitdir/atlsd.service
grep -qx "ExecStart=$sbindir/atlsd --config $sysconfdir/atlsd/atlsd.yaml" "$unit" ||
  { echo "unit does not start the installed atlsd with $sysconfdir/atlsd/atlsd.yaml"; fail=1; }
grep -qx "ExecStartPre=$sbindir/atlsd --config $sysconfdir/atlsd/atlsd.yaml --check" "$unit" ||
  { echo "unit does not check $sysconfdir/atlsd/atlsd.yaml before starting"; fail=1; }
grep -qx "Type=notify" "$unit" || { echo "unit is not Type=notify"; fail=1; }
# The user the package's postinst creates, with the group that opens /dev/tpmrm0.
if ! grep -qx "User=atlsd" "$unit" || ! grep -qx "SupplementaryGroups=tss" "$unit"; then
  echo "unit does not run as user atlsd in group tss"
  fail=1
fi
grep -qx "Service=atlsd.service" "$root$unitdir/atlsd.socket" ||
  { echo "atlsd.socket does not activate atlsd.service"; fail=1; }
"$root$sbindir/atlsd" --version | grep -q "^atlsd " || { echo "installed atlsd does not run"; fail=1; }
[ $fail -eq 0 ] && echo "install layout OK"
exit $fail

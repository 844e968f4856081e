#!/usr/bin/env bash
# cpack's .deb, built from this build tree and unpacked into a scratch root with dpkg-deb (no
# dpkg database, no root filesystem touched): its name, control fields, conffiles and maintainer
# scripts; the files where the unit expects them; the unit passing systemd-analyze verify inside
# the unpacked tree; the packaged atlsd running --version, and --check on the socket-activated
# example config with a certificate made here.
#
# The main example config is not --check'ed: its attested listener keeps its key in the TPM
# (tpm:tik) and --check opens /dev/tpmrm0, which this machine does not have; the e2e suite checks
# that listener against swtpm.
#
# usage: package_deb_test.sh BUILD_DIR VERSION SOURCE_DIR
set -euo pipefail
build=$1 version=$2 source=$3

for tool in cpack dpkg-deb dpkg-shlibdeps dpkg file openssl systemd-analyze; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/setup.sh installs it)"; exit 1; }
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail=0
check() {  # message command...
  local what=$1
  shift
  if ! "$@"; then
    echo "FAIL: $what"
    fail=1
  fi
}

# CPACK_CMAKE_GENERATOR=Ninja: cpack first builds the generator's "preinstall" target, which for
# Makefiles depends on "all", the whole test suite included. Ninja has no such target, so cpack
# goes straight to the install rules with the binaries this tree already built: nothing is
# rebuilt (and nothing needs ninja itself).
(cd "$scratch" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$scratch/out" \
  -D CPACK_CMAKE_GENERATOR=Ninja) >"$scratch/cpack.log" 2>&1 ||
  { echo "FAIL: cpack -G DEB:"; cat "$scratch/cpack.log"; exit 1; }
grep -q 'Run preinstall target' "$scratch/cpack.log" && { echo "FAIL: cpack built targets"; exit 1; }

arch=$(dpkg --print-architecture)
deb=$scratch/out/atlsd_${version}_${arch}.deb
[ -f "$deb" ] || { echo "FAIL: no $(basename "$deb"); cpack made:"; ls "$scratch/out"; exit 1; }
echo "package: $(basename "$deb"), $(stat -c %s "$deb") bytes"

# Control fields.
control=$(dpkg-deb -f "$deb")
echo "$control"
field() { dpkg-deb -f "$deb" "$1"; }
check "Package is atlsd" test "$(field Package)" = atlsd
check "Version is $version" test "$(field Version)" = "$version"
check "Architecture is $arch" test "$(field Architecture)" = "$arch"
check "Maintainer is set" test -n "$(field Maintainer)"
check "Description has a summary and an extended text" test "$(field Description | wc -l)" -gt 1
depends=$(field Depends)
# dpkg-shlibdeps ran: versioned dependencies on the libraries atlsd links against, from their
# shlibs/symbols files. The rest are the maintainer scripts' and the unit's.
for dep in 'libc6 (>=' 'libssl3 (>=' 'libtss2-esys-3.0.2-0' 'libyaml-cpp0.7' 'libsystemd0' \
  adduser tpm-udev procps; do
  check "Depends names $dep" grep -qF "$dep" <<<"$depends"
done

# conffiles: the example configs, and nothing outside /etc.
conffiles=$(dpkg-deb -I "$deb" conffiles)
check "conffiles are the two example configs" test "$conffiles" = \
  "$(printf '/etc/atlsd/atlsd.example.yaml\n/etc/atlsd/atlsd.socket-activated.example.yaml')"

# Maintainer scripts: executable, valid sh, and the postinst makes the user the unit runs as.
mkdir "$scratch/control"
dpkg-deb -e "$deb" "$scratch/control"
for script in postinst prerm postrm; do
  check "$script is executable" test -x "$scratch/control/$script"
  check "$script is valid sh" sh -n "$scratch/control/$script"
done
# Continued lines joined, so that each command reads as one.
postinst=$(sed -e ':a' -e '/\\$/N; s/\\\n *//; ta' "$scratch/control/postinst")
check "postinst creates the system user atlsd" \
  grep -q 'adduser --quiet --system --group .* atlsd$' <<<"$postinst"
check "postinst puts atlsd in group tss" grep -qx '  adduser --quiet atlsd tss' \
  "$scratch/control/postinst"

# The files, unpacked.
root=$scratch/root
mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
# verify below resolves the unit's dependencies and commands inside the root: this machine's
# systemd units and /bin/kill (procps, a dependency) first, then the package over them.
cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
cp /bin/kill "$root/bin/kill"
dpkg-deb -x "$deb" "$root"
for f in /usr/sbin/atlsd /usr/bin/atlsctl; do
  check "$f is an executable" test -x "$root$f"
  check "$f is stripped" grep -q ', stripped' <<<"$(file -b "$root$f")"
done
for f in /etc/atlsd/atlsd.example.yaml /etc/atlsd/atlsd.socket-activated.example.yaml \
  /usr/lib/systemd/system/atlsd.service /usr/lib/systemd/system/atlsd.socket \
  /usr/share/doc/atlsd/config-reference.md \
  /usr/share/doc/atlsd/examples/atlsd.service.d/privileged-port.conf; do
  check "$f is in the package" test -f "$root$f"
done
check "/etc/atlsd is a directory of mode 755" test "$(stat -c %a "$root/etc/atlsd")" = 755
check "the live config /etc/atlsd/atlsd.yaml is not shipped" test ! -e "$root/etc/atlsd/atlsd.yaml"
# The units are the source's templates with the package's directories filled in.
for u in atlsd.service atlsd.socket; do
  check "$u is systemd/$u.in for the prefix /usr" cmp -s "$root/usr/lib/systemd/system/$u" \
    <(sed 's|@ATLS_FULL_SBINDIR@|/usr/sbin|g; s|@ATLS_FULL_SYSCONFDIR@|/etc|g
           s|@ATLS_FULL_DOCDIR@|/usr/share/doc/atlsd|g' "$source/systemd/$u.in")
done

unit=$root/usr/lib/systemd/system/atlsd.service
check "ExecStart runs /usr/sbin/atlsd on /etc/atlsd/atlsd.yaml" \
  grep -qx 'ExecStart=/usr/sbin/atlsd --config /etc/atlsd/atlsd.yaml' "$unit"
check "ExecStartPre checks that config" \
  grep -qx 'ExecStartPre=/usr/sbin/atlsd --config /etc/atlsd/atlsd.yaml --check' "$unit"
check "Documentation= names the installed config reference" \
  grep -qx 'Documentation=file:///usr/share/doc/atlsd/config-reference.md' "$unit"
if ! out=$(systemd-analyze --no-pager --root="$root" verify --man=no --generators=no \
  --recursive-errors=no /usr/lib/systemd/system/atlsd.service \
  /usr/lib/systemd/system/atlsd.socket 2>&1) || [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify on the unpacked units:"
  echo "$out"
  fail=1
fi

# The packaged binaries run. Their libraries are this machine's: the Depends above.
out=$("$root/usr/sbin/atlsd" --version) || true
check "the packaged atlsd --version says atlsd $version (it said '$out')" \
  grep -q "^atlsd $version" <<<"$out"
"$source/tests/certs/gen-certs.sh" "$scratch/pki" >/dev/null
cp "$scratch/pki/server.crt" "$scratch/pki/server.key" "$root/etc/atlsd/"
# The example names server.crt and server.key relative to its own directory: /etc/atlsd here is
# $root/etc/atlsd, and the file is checked as shipped.
example=$root/etc/atlsd/atlsd.socket-activated.example.yaml
if out=$("$root/usr/sbin/atlsd" --config "$example" --check 2>&1); then
  echo "socket-activated example: $out"
else
  echo "FAIL: the packaged atlsd --check refuses the socket-activated example config:"
  echo "$out"
  fail=1
fi
out=$("$root/usr/bin/atlsctl" config check "$example" 2>&1) ||
  { echo "FAIL: atlsctl config check refuses it: $out"; fail=1; }

[ $fail -eq 0 ] && echo "package OK"
exit $fail
